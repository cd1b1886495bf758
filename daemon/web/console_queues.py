"""The console's mail queues: the stored inbound messages (list, process again, release
from spam), the outbound mail (list, retry a failed one), the webhook deliveries (list,
retry a dead one or all) and the correspondents' bouncing marks (list, clear), as `buzon
inbound|outbox|webhooks|addresses` do them, with the same shared operations. Each action
answers with a message on the page it came from."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from daemon import operations
from daemon.web.console_refusals import refusal
from daemon.web.console_text import translate
from daemon.web.console_visit import Section, Visit, local_path
from notifier import outbox
from notifier.errors import OutboxError
from tickets import queries, webhooks
from tickets.errors import TicketError
from tickets.models import RawState, utcnow

LIMIT = 200
RAW_STATES = tuple(s.value for s in RawState)
OUTBOX_STATES = (outbox.PENDING, outbox.SENT, outbox.FAILED)

# A listing: (session, state or None, limit) -> rows.
Lister = Callable[[Any, str | None, int], list[dict[str, Any]]]


class Queues(Section):
    def routes(self) -> list[BaseRoute]:
        return [
            self.agent_route("/inbound", self.inbound),
            self.agent_route("/inbound/reprocess", self.reprocess, "POST"),
            self.agent_route("/inbound/release", self.release, "POST"),
            self.agent_route("/outbox", self.outbox),
            self.agent_route("/outbox/retry", self.retry_mail, "POST"),
            self.agent_route("/webhooks", self.webhooks),
            self.agent_route("/webhooks/retry", self.retry_delivery, "POST"),
            self.agent_route("/addresses", self.addresses),
            self.agent_route("/addresses/clear", self.clear_address, "POST"),
        ]

    # --- the lists ----------------------------------------------------------------------

    async def inbound(self, request: Request, visit: Visit) -> Response:
        def rows(session: Any, state: str | None, limit: int) -> list[dict[str, Any]]:
            return queries.list_raw(session, state=state, limit=limit)

        return await self._list(request, visit, "inbound", RAW_STATES, rows)

    async def outbox(self, request: Request, visit: Visit) -> Response:
        def rows(session: Any, state: str | None, limit: int) -> list[dict[str, Any]]:
            return outbox.list_rows(session, state=state, limit=limit)

        return await self._list(request, visit, "outbox", OUTBOX_STATES, rows)

    async def webhooks(self, request: Request, visit: Visit) -> Response:
        def rows(session: Any, state: str | None, limit: int) -> list[dict[str, Any]]:
            return webhooks.list_deliveries(session, state=state, limit=limit)

        return await self._list(request, visit, "webhooks", webhooks.STATES, rows)

    async def addresses(self, request: Request, visit: Visit) -> Response:
        # Expired marks are lifted first: the page never shows as bouncing an address
        # that mail would already reach.
        await run_in_threadpool(self.parts.expire_bouncing, utcnow())

        def rows(session: Any, state: str | None, limit: int) -> list[dict[str, Any]]:
            return queries.list_addresses(session, bouncing=state == "bouncing", limit=limit)

        return await self._list(request, visit, "addresses", ("bouncing",), rows)

    async def _list(
        self,
        request: Request,
        visit: Visit,
        name: str,
        states: tuple[str, ...],
        lister: Lister,
    ) -> Response:
        state = request.query_params.get("state") or None
        if state not in states:
            state = None  # an unknown state in a hand-edited address: show them all

        def read() -> list[dict[str, Any]]:
            with self.parts.sessions() as session:
                return lister(session, state, LIMIT)

        rows = await run_in_threadpool(read)
        t = partial(translate, visit.language)
        return self.console.render(
            request,
            visit,
            f"{name}.html",
            name=name,
            rows=rows,
            state=state,
            state_options=[(s, t("state_" + s)) for s in states],
        )

    # --- the actions --------------------------------------------------------------------

    async def reprocess(self, request: Request, visit: Visit) -> Response:
        t = partial(translate, visit.language)

        def run(raw_id: int | None) -> str:
            states = operations.reprocess(self.parts.sessions, self.parts.desk, raw_id)
            done = ", ".join(f"{n} {t(f'state_{s}')}" for s, n in sorted(states.items()))
            return t("reprocessed", count=states.total(), states=done or "-")

        return await self._act(request, visit, "/inbound", run, every="failed")

    async def release(self, request: Request, visit: Visit) -> Response:
        t = partial(translate, visit.language)

        def run(raw_id: int | None) -> str:
            assert raw_id is not None
            ((_, outcome),) = operations.release(self.parts.sessions, self.parts.desk, [raw_id])
            if outcome.ticket_id:
                return t("released", id=raw_id, number=outcome.ticket_id)
            return t("released_no_ticket", id=raw_id, state=t("state_" + outcome.state))

        return await self._act(request, visit, "/inbound?state=spam", run)

    async def retry_mail(self, request: Request, visit: Visit) -> Response:
        t = partial(translate, visit.language)

        def run(outbox_id: int | None) -> str:
            assert outbox_id is not None
            operations.retry_outbox(self.parts.sessions, outbox_id, utcnow())
            return t("retried", id=outbox_id)

        return await self._act(request, visit, "/outbox?state=failed", run)

    async def retry_delivery(self, request: Request, visit: Visit) -> Response:
        t = partial(translate, visit.language)

        def run(delivery_id: int | None) -> str:
            if delivery_id is None:
                count = operations.retry_dead_webhooks(self.parts.sessions, utcnow())
                return t("retried_dead", count=count)
            operations.retry_webhook(self.parts.sessions, delivery_id, utcnow())
            return t("retried", id=delivery_id)

        return await self._act(request, visit, "/webhooks?state=dead", run, every="dead")

    async def clear_address(self, request: Request, visit: Visit) -> Response:
        data = await self.console.form(request, visit)
        back = local_path(data.get("back"), "/addresses?state=bouncing")
        address = data.get("address")
        t = partial(translate, visit.language)
        if not isinstance(address, str) or "@" not in address:
            return self.console.redirect(back, ("error", t("not_found")))
        cleared, _ = await run_in_threadpool(
            operations.clear_addresses, self.parts.sessions, [address]
        )
        said = t("mark_cleared" if cleared else "not_bouncing", address=address)
        return self.console.redirect(back, ("ok" if cleared else "error", said))

    async def _act(
        self,
        request: Request,
        visit: Visit,
        back: str,
        run: Callable[[int | None], str],
        every: str | None = None,
    ) -> Response:
        """Run one action on the row `id` of the form (or on every row, when the form says
        `every` and the action allows it); back to the page the form was on (`back`) with
        what happened."""
        data = await self.console.form(request, visit)
        back = local_path(data.get("back"), back)
        raw = data.get("id")
        t = partial(translate, visit.language)
        if isinstance(raw, str) and raw.isdigit():
            wanted: int | None = int(raw)
        elif every is not None and data.get("every") == every:
            wanted = None
        else:
            return self.console.redirect(back, ("error", t("not_found")))
        try:
            said = await run_in_threadpool(run, wanted)
        except (TicketError, OutboxError) as exc:
            return self.console.redirect(
                back, ("error", t("refused", why=refusal(visit.language, str(exc))))
            )
        return self.console.redirect(back, ("ok", said))
