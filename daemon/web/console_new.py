"""The console's "new ticket" page: an agent registers a request that came by phone,
chat or in person, as `buzon tickets create` does (through the desk, the agent signed
in as its author). A refused form comes back filled in, so nothing typed is lost."""

from __future__ import annotations

from functools import partial

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from daemon import operations
from daemon.web.console_forms import Form
from daemon.web.console_refusals import refusal
from daemon.web.console_text import LANGUAGES, translate
from daemon.web.console_visit import Section, Visit
from tickets.errors import TicketError
from tickets.shaping import SOURCES

# Mail is how tickets come by themselves; an agent registers the other ways.
AGENT_SOURCES = tuple(s for s in SOURCES if s != "mail")


class NewTicket(Section):
    def routes(self) -> list[BaseRoute]:
        return [
            self.agent_route("/new", self.show),
            self.agent_route("/new", self.create, "POST"),
        ]

    async def show(self, request: Request, visit: Visit) -> Response:
        blank = {"language": self.parts.language, "source": "phone", "acknowledge": "1"}
        return self._page(request, visit, blank, None)

    async def create(self, request: Request, visit: Visit) -> Response:
        form = Form(await self.console.form(request, visit))
        assert visit.agent is not None  # agent_page lets only agents in
        cc = [a for a in (form.get("cc") or "").replace(";", ",").split(",") if a.strip()]
        language = form.get("language")
        try:
            done = await run_in_threadpool(
                partial(
                    operations.create_ticket,
                    self.parts.desk,
                    visit.agent,
                    requester=form.get("requester") or "",
                    subject=form.get("subject") or "",
                    text=form.text("text").strip(),
                    cc=cc,
                    source=form.get("source") or "phone",
                    language=language if language in LANGUAGES else self.parts.language,
                    acknowledge=form.get("acknowledge") is not None,
                )
            )
        except TicketError as exc:
            typed = {k: form.text(k) for k in ("requester", "subject", "text", "cc", "source",
                                               "language", "acknowledge")}  # fmt: skip
            return self._page(request, visit, typed, refusal(visit.language, str(exc)), status=422)
        number = done.changes[0].ticket_id
        t = partial(translate, visit.language)
        return self.console.redirect(f"/tickets/{number}", ("ok", t("created", number=number)))

    def _page(
        self,
        request: Request,
        visit: Visit,
        typed: dict[str, str],
        error: str | None,
        status: int = 200,
    ) -> Response:
        t = partial(translate, visit.language)
        return self.console.render(
            request,
            visit,
            "new.html",
            status=status,
            typed=typed,
            error=error,
            source_options=[(s, t("source_" + s)) for s in AGENT_SOURCES],
            language_options=[("es", "Español"), ("en", "English")],
        )
