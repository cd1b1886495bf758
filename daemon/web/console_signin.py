"""Signing in to the console: a one-time link mailed to a configured agent's address, or
the address and a password; signing out.

The page answers the same whether or not an address is an agent's (nobody learns who
is). Every sign-in attempt counts against its client address, in this process: past
`web.sign_in_attempts_per_minute` the answer is 429. A link in a mail opens a page with
a button rather than signing in on the GET: mail scanners that fetch links would use
it up otherwise.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from daemon.web.console_visit import (
    SESSION_COOKIE,
    Console,
    Forbidden,
    Section,
    Visit,
    local_path,
)
from notifier.compose import Mailbox
from notifier.console_mail import queue_sign_in_link
from tickets.console_auth import (
    Opened,
    check_password,
    close_session,
    create_link,
    link_url,
    open_session,
    use_link,
)
from tickets.models import utcnow


class RateLimit:
    """At most `per_minute` events per key in any 60 seconds (a sliding window)."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._seen: defaultdict[str, deque[float]] = defaultdict(deque)

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        seen = self._seen[key]
        while seen and seen[0] <= now - 60:
            seen.popleft()
        if len(seen) >= self.per_minute:
            return False
        seen.append(now)
        if len(self._seen) > 10_000:  # forget idle clients rather than grow without end
            for idle in [k for k, v in self._seen.items() if not v or v[-1] <= now - 60]:
                del self._seen[idle]
        return True


class SignIn(Section):
    def __init__(self, console: Console) -> None:
        super().__init__(console)
        self.limit = RateLimit(self.parts.config.sign_in_attempts_per_minute)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/signin", self.page, methods=["GET"]),
            Route("/signin", self.submit, methods=["POST"]),
            Route("/signin/link", self.link_page, methods=["GET"]),
            Route("/signin/link", self.link_submit, methods=["POST"]),
            self.agent_route("/signout", self.sign_out, "POST"),
        ]

    async def page(self, request: Request) -> Response:
        visit = await self.console.visit(request)
        return self._page(request, visit)

    def _page(
        self, request: Request, visit: Visit, message: str | None = None, status: int = 200
    ) -> Response:
        next_path = local_path(request.query_params.get("next"))
        return self.console.render(
            request, visit, "signin.html", status=status, message=message, next=next_path
        )

    async def _attempt(self, request: Request) -> tuple[Visit, FormData] | Response:
        """A sign-in POST: its form once the CSRF token matched and the client is within
        its rate limit; else the answer that refuses it (403, 429)."""
        visit = await self.console.visit(request)
        try:
            form = await self.console.form(request, visit)
        except Forbidden:
            return self.console.forbidden(request, visit)
        if not self.limit.allow(_client(request)):
            return self._too_many(request, visit)
        return visit, form

    async def submit(self, request: Request) -> Response:
        checked = await self._attempt(request)
        if isinstance(checked, Response):
            return checked
        visit, form = checked
        address = str(form.get("address") or "").strip().lower()
        password = str(form.get("password") or "")
        if password:
            agent = await run_in_threadpool(self._check_password, address, password)
            if agent is None:
                return self._page(request, visit, "wrong_password", status=401)
            return await self._signed_in(agent, local_path(form.get("next")))
        if address in self.parts.agents:
            await run_in_threadpool(self._mail_link, address, visit.language)
        return self._page(request, visit, "link_sent")

    def _check_password(self, address: str, password: str) -> str | None:
        with self.parts.sessions.begin() as session:
            ok = check_password(session, address, password)
        return address if ok and address in self.parts.agents else None

    def _mail_link(self, agent: str, language: str) -> None:
        """The link and its mail in one transaction: no link without its mail."""
        minutes = self.parts.config.sign_in_link_minutes
        now = utcnow()
        with self.parts.sessions.begin() as session:
            token = create_link(session, agent, minutes, now)
            queue_sign_in_link(
                session,
                self.parts.renderer,
                sender=self.parts.sender,
                agent=Mailbox(agent, self.parts.agents.get(agent, "")),
                link=link_url(self.parts.base_url, token),
                minutes=minutes,
                language=language,
                now=now,
            )

    async def link_page(self, request: Request) -> Response:
        visit = await self.console.visit(request)
        token = request.query_params.get("token", "")
        return self.console.render(request, visit, "signin_link.html", token=token)

    async def link_submit(self, request: Request) -> Response:
        checked = await self._attempt(request)
        if isinstance(checked, Response):
            return checked
        visit, form = checked
        agent = await run_in_threadpool(self._use_link, str(form.get("token") or ""))
        if agent is None:
            return self.console.render(
                request, visit, "message.html", status=400, message="link_invalid"
            )
        return await self._signed_in(agent, "/")

    def _use_link(self, token: str) -> str | None:
        with self.parts.sessions.begin() as session:
            agent = use_link(session, token, utcnow())
        # An agent removed from the configuration since the link was sent is no agent.
        return agent if agent in self.parts.agents else None

    async def _signed_in(self, agent: str, next_path: str) -> Response:
        hours = self.parts.config.session_hours
        opened = await run_in_threadpool(self._open, agent, hours)
        response = self.console.redirect(next_path)
        self.console.set_cookie(response, SESSION_COOKIE, opened.token, int(hours * 3600))
        return response

    def _open(self, agent: str, hours: float) -> Opened:
        with self.parts.sessions.begin() as session:
            return open_session(session, agent, hours, utcnow())

    async def sign_out(self, request: Request, visit: Visit) -> Response:
        await self.console.form(request, visit)
        if visit.session_token:
            await run_in_threadpool(self._close, visit.session_token)
        response = self.console.redirect("/signin")
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    def _close(self, token: str) -> None:
        with self.parts.sessions.begin() as session:
            close_session(session, token, utcnow())

    def _too_many(self, request: Request, visit: Visit) -> Response:
        response = self._page(request, visit, "too_many", status=429)
        response.headers["Retry-After"] = "60"
        return response


def _client(request: Request) -> str:
    """The client's address (uvicorn puts a trusted proxy's X-Forwarded-For here)."""
    return request.client.host if request.client else "-"
