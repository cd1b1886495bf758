"""The console's pages: the queue (with the CLI's filters and search), a ticket (thread,
attachments, history, SLA clocks, participants, similar tickets, the action forms), an
attachment's download, and the language switch.

A mail's HTML is never put on a page as it came: the page shows the text, and the HTML
only after `nh3` has sanitised it (no script, no event handler, no style), under a
Content-Security-Policy that runs no script at all.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import partial
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import nh3
from markupsafe import Markup
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from daemon.web.console_refusals import refusal
from daemon.web.console_text import LANGUAGES, STATUS_NAMES, translate
from daemon.web.console_visit import (
    LANGUAGE_COOKIE,
    SECURITY_HEADERS,
    Console,
    Section,
    Visit,
    local_path,
)
from tickets import listing, queries
from tickets.blobstore import BlobStore
from tickets.errors import TicketError, TicketNotFound
from tickets.models import Article, utcnow

QUEUE_LIMIT = 200


class Pages(Section):
    def __init__(self, console: Console) -> None:
        super().__init__(console)
        self.zone = ZoneInfo(self.parts.timezone)
        console.env.filters["when"] = self.when

    def routes(self) -> list[BaseRoute]:
        return [
            self.agent_route("/", self.queue),
            self.agent_route("/tickets/{number:int}", self.ticket),
            self.agent_route("/tickets/{number:int}/attachments/{attachment:int}", self.attachment),
            Route("/language/{code}", self.language, methods=["GET"]),
        ]

    def when(self, moment: datetime | str | None) -> str:
        """A stored UTC time (or its ISO 8601 text) as agents read it: the desk's time
        zone, to the minute."""
        if isinstance(moment, str):
            moment = datetime.fromisoformat(moment)
        return moment.astimezone(self.zone).strftime("%Y-%m-%d %H:%M") if moment else "-"

    # --- the queue ----------------------------------------------------------------------

    async def queue(self, request: Request, visit: Visit) -> Response:
        wanted = {k: v.strip() for k, v in request.query_params.items() if v.strip()}
        try:
            rows = await run_in_threadpool(self._tickets, wanted, visit)
            error = None
        except TicketError as exc:
            rows, error = [], refusal(visit.language, str(exc))
        t = partial(translate, visit.language)
        choices = self._choices(visit)
        return self.console.render(
            request,
            visit,
            "queue.html",
            rows=rows,
            error=error,
            wanted=wanted,
            now=utcnow(),
            **{
                **choices,
                "status_options": [("open", t("open")), *choices["status_options"]],
                "agent_options": [("me", t("me")), *choices["agent_options"]],
            },
        )

    def _choices(self, visit: Visit) -> dict[str, Any]:
        """The names a form offers (value, label), from the catalogue and the agents."""
        catalogue = self.parts.catalogue
        t = partial(translate, visit.language)
        return {
            "status_options": [(s, t(s)) for s in STATUS_NAMES],
            "team_options": [(team, team) for team in catalogue.teams],
            "agent_options": list(self.parts.agents.items()),
            "category_options": [(c, c) for c in catalogue.categories],
            "impact_options": [(i, t(i)) for i in catalogue.matrix.impacts],
            "urgency_options": [(u, t(u)) for u in catalogue.matrix.urgencies],
            "agents": self.parts.agents,
        }

    def _tickets(self, wanted: dict[str, str], visit: Visit) -> list[dict[str, Any]]:
        """As `buzon tickets list` filters: names checked against the catalogue."""
        level = wanted.get("level")
        assignee = wanted.get("assignee")
        filters = listing.TicketFilters(
            status=wanted.get("status"),
            level=int(level) if level in ("1", "2") else None,
            team=wanted.get("team"),
            assignee=visit.agent if assignee == "me" else assignee,
            category=wanted.get("category"),
            words=wanted.get("q"),
            requester=wanted.get("requester"),
            tag=wanted.get("tag"),
            breached=bool(wanted.get("breached")),
            due_within=_duration(wanted.get("due_within")),
        )
        with self.parts.sessions() as session:
            return listing.list_tickets(
                session, self.parts.catalogue, filters, utcnow(), limit=QUEUE_LIMIT
            )

    # --- one ticket ---------------------------------------------------------------------

    async def ticket(self, request: Request, visit: Visit) -> Response:
        number = int(request.path_params["number"])
        try:
            detail, sla, bodies = await run_in_threadpool(self._ticket, number)
        except TicketNotFound:
            return self.console.render(
                request, visit, "message.html", status=404, message="not_found"
            )
        return self.console.render(
            request,
            visit,
            "ticket.html",
            ticket=detail,
            sla=sla,
            bodies=bodies,
            **self._choices(visit),
        )

    def _ticket(self, number: int) -> tuple[dict[str, Any], dict[str, Any], dict[int, Any]]:
        now = utcnow()
        with self.parts.sessions() as session:
            detail = queries.ticket_detail(session, number, now)
            sla = queries.sla_report(session, number, self.parts.desk.sla_policy, now)
            rows = session.execute(
                select(Article.id, Article.text, Article.html).where(Article.ticket_id == number)
            )
            bodies = {row.id: _body(row.text, row.html) for row in rows}
        return detail, sla, bodies

    async def attachment(self, request: Request, visit: Visit) -> Response:
        number = int(request.path_params["number"])
        wanted = int(request.path_params["attachment"])
        try:
            found, payload = await run_in_threadpool(self._attachment, number, wanted)
        except (TicketNotFound, OSError):
            return self.console.render(
                request, visit, "message.html", status=404, message="not_found"
            )
        # Always a download, never a page of this site: an HTML attachment cannot run here.
        name = quote(found["filename"] or "adjunto", safe="")
        headers = {
            **SECURITY_HEADERS,
            "Content-Security-Policy": "sandbox; default-src 'none'",
            "Content-Disposition": f"attachment; filename*=UTF-8''{name}",
        }
        return Response(payload, media_type="application/octet-stream", headers=headers)

    def _attachment(self, number: int, wanted: int) -> tuple[dict[str, Any], bytes]:
        with self.parts.sessions() as session:
            found = queries.attachment(session, number, wanted)
        return found, BlobStore(self.parts.attachments_dir).get(found["sha256"])

    # --- language -----------------------------------------------------------------------

    async def language(self, request: Request) -> Response:
        code = request.path_params["code"]
        response = self.console.redirect(local_path(request.query_params.get("next")))
        if code in LANGUAGES:
            self.console.set_cookie(response, LANGUAGE_COOKIE, code, max_age=365 * 86400)
        return response


def _duration(value: str | None) -> timedelta | None:
    """A typed SLA window ("2h"); one that is not a duration is the domain's refusal."""
    if not value:
        return None
    try:
        return listing.parse_duration(value)
    except ValueError as exc:
        raise TicketError(str(exc)) from None


def _body(text: str, html: str | None) -> dict[str, Any]:
    """The full text (the page folds what the new text quotes) and the sanitised HTML."""
    clean = nh3.clean(html, url_schemes={"http", "https", "mailto"}) if html else ""
    return {"text": text or "", "html": Markup(clean)}  # noqa: S704 - sanitised by nh3
