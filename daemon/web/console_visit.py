"""One visit to the console: who is signed in (the session cookie), in which language,
the forms' CSRF token, flash messages, and pages rendered from the Jinja2 templates.

Forms are protected against cross-site requests by a token in a hidden field: a
signed-in agent's is their session's; the sign-in forms (before any session) use a
double-submit cookie. A POST whose token does not match is answered 403.
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from daemon.web.console_history import history_line
from daemon.web.console_text import LANGUAGES, STATUS_NAMES, term, translate
from daemon.web.parts import WebParts
from tickets.console_auth import find_session
from tickets.models import utcnow

SESSION_COOKIE = "buzon_session"
FORM_COOKIE = "buzon_form"  # the sign-in forms' CSRF token (double submit)
LANGUAGE_COOKIE = "buzon_lang"
FLASH_COOKIE = "buzon_flash"
TEMPLATES = Path(__file__).parent / "templates"

# No script runs on a console page, whatever a mail carries: the pages need none, so the
# policy forbids all (defence in depth behind the sanitiser).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # a sign-in link's token never leaves in a Referer
    "Cache-Control": "no-store",
}


class Forbidden(Exception):
    """A POST without this visit's CSRF token."""


@dataclass(frozen=True)
class Visit:
    agent: str | None  # None: not signed in
    csrf: str
    language: str
    session_token: str | None = None
    new_form_cookie: bool = False  # the double-submit cookie must be set on the answer


Handler = Callable[[Request, Visit], Awaitable[Response]]


class Console:
    """What every console page shares; built once per app from the WebParts."""

    def __init__(self, parts: WebParts) -> None:
        self.parts = parts
        self.env = Environment(
            loader=FileSystemLoader(str(TEMPLATES)),
            autoescape=select_autoescape(default=True),  # mail text is always escaped
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    # --- who, in which language ---------------------------------------------------------

    def language(self, request: Request) -> str:
        chosen = request.cookies.get(LANGUAGE_COOKIE, "")
        return chosen if chosen in LANGUAGES else self.parts.language

    async def visit(self, request: Request) -> Visit:
        language = self.language(request)
        token = request.cookies.get(SESSION_COOKIE)
        if token:
            found = await run_in_threadpool(self._find, token)
            if found is not None and found.agent in self.parts.agents:
                return Visit(found.agent, found.csrf, language, session_token=token)
        form_token = request.cookies.get(FORM_COOKIE, "")
        if len(form_token) >= 32:
            return Visit(None, form_token, language)
        return Visit(None, secrets.token_urlsafe(32), language, new_form_cookie=True)

    def _find(self, token: str) -> Any:
        with self.parts.sessions() as session:
            return find_session(session, token, utcnow())

    async def form(self, request: Request, visit: Visit) -> FormData:
        """The POSTed form, once its CSRF token is this visit's."""
        form = await request.form(max_files=20)
        sent = form.get("csrf")
        if visit.new_form_cookie or not isinstance(sent, str):
            raise Forbidden
        if not hmac.compare_digest(sent.encode(), visit.csrf.encode()):
            raise Forbidden
        return form

    # --- answers ------------------------------------------------------------------------

    def render(
        self, request: Request, visit: Visit, template: str, status: int = 200, **context: Any
    ) -> HTMLResponse:
        language = visit.language

        def t(key: str, **values: object) -> str:
            return translate(language, key, **values)

        page = self.env.get_template(template).render(
            t=t,
            status_name=lambda s: t(s) if s in STATUS_NAMES else s,
            term=lambda prefix, value: term(language, prefix, value),
            history=lambda event: history_line(language, event),
            visit=visit,
            agent_name=self.parts.agents.get(visit.agent or "", visit.agent),
            flash=_read_flash(request),
            here=_here(request),
            **context,
        )
        response = HTMLResponse(page, status_code=status, headers=SECURITY_HEADERS)
        if FLASH_COOKIE in request.cookies:
            response.delete_cookie(FLASH_COOKIE, path="/")
        if visit.new_form_cookie:
            self.set_cookie(response, FORM_COOKIE, visit.csrf)
        return response

    def redirect(self, url: str, flash: tuple[str, str] | None = None) -> RedirectResponse:
        """303 to `url`, with a message (kind "ok" or "error", text) for the next page."""
        response = RedirectResponse(url, status_code=303, headers=SECURITY_HEADERS)
        if flash is not None:
            kind, text = flash
            value = json.dumps({"kind": kind, "text": text[:600]}).encode()
            self.set_cookie(response, FLASH_COOKIE, base64.urlsafe_b64encode(value).decode())
        return response

    def set_cookie(
        self, response: Response, name: str, value: str, max_age: int | None = None
    ) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path="/",
            httponly=True,
            samesite="lax",
            secure=self.parts.config.secure_cookies,
        )

    def forbidden(self, request: Request, visit: Visit) -> HTMLResponse:
        return self.render(request, visit, "message.html", status=403, message="forbidden")


def agent_page(console: Console, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint for signed-in agents: others are sent to the sign-in page (a GET) or
    refused (a POST, whose CSRF token cannot be theirs)."""

    async def endpoint(request: Request) -> Response:
        visit = await console.visit(request)
        if visit.agent is None:
            if request.method != "GET":
                return console.forbidden(request, visit)
            return console.redirect("/signin?next=" + quote(_here(request), safe=""))
        try:
            return await handler(request, visit)
        except Forbidden:
            return console.forbidden(request, visit)

    return endpoint


class Section:
    """A part of the console (pages, forms) on the shared Console; its agents' routes
    let only signed-in agents in."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.parts = console.parts

    def agent_route(self, path: str, handler: Handler, method: str = "GET") -> Route:
        return Route(path, agent_page(self.console, handler), methods=[method])


def local_path(value: object, default: str = "/") -> str:
    """`value` when it is a path on this site; `default` otherwise (no open redirect)."""
    if isinstance(value, str) and value.startswith("/") and not value.startswith(("//", "/\\")):
        return value
    return default


def _here(request: Request) -> str:
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def _read_flash(request: Request) -> dict[str, str] | None:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(raw.encode()))
    except ValueError:
        return None
    if isinstance(data, dict) and {"kind", "text"} <= data.keys():
        return {"kind": str(data["kind"]), "text": str(data["text"])}
    return None
