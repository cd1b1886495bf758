"""The desk: the one transaction seam through which every interface changes tickets.

Mail (ingest), the CLI (agents' actions) and the scheduler (SLA scan, auto-close,
reminders) all come here. Whatever changes a ticket, the same things follow inside the
same transaction (DESIGN invariant 10): the SLA clocks are refreshed, then the notifier
writes the outbox rows, so that the mail exists exactly when the change does.

The desk is built from explicit parts by `daemon.wiring`; it knows no configuration
file and no runner.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from notifier.mail import Queued
from notifier.notify import Notifier
from notifier.sla_mail import StaffRouting, notify_sla
from notifier.staff_mail import StaffNotifier
from tickets import actions, search, sla
from tickets.batch import process_batch
from tickets.changes import (
    AgentMailRefused,
    AgentReplied,
    Change,
    CustomerReplied,
    Imported,
    NoteAdded,
    TicketCreated,
)
from tickets.housekeeping import close_resolved, tickets_to_remind
from tickets.ingest import Outcome, process
from tickets.models import Ticket, utcnow
from tickets.policy import MailPolicy
from tickets.sla import SlaPolicy, fired_keys, refresh
from tickets.webhooks import WebhookPlanner

Action = Callable[[Session, Ticket], list[Change]]
# The changes that add words to a ticket: its search index follows them.
TEXT_CHANGES = (TicketCreated, CustomerReplied, AgentReplied, NoteAdded)
# Changes that move nothing the SLA clocks read (status, priority, category, level,
# first response, resolution): after them alone the clocks are not recomputed.
CLOCK_NEUTRAL = (CustomerReplied, NoteAdded, Imported, AgentMailRefused)

BATCH = 500  # tickets per scheduled transaction: short transactions, bounded memory
MAX_BATCHES = 1000  # a guard: a pass never loops forever, the next run goes on


@dataclass(frozen=True)
class Acted:
    """What one agent action did: the domain changes and the mail they caused."""

    changes: list[Change]
    queued: list[Queued]


class Desk:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        policy: MailPolicy,
        sla_policy: SlaPolicy,
        notifier: Notifier,
        routing: StaffRouting,
        *,
        clock: Callable[[], datetime] = utcnow,
        batch: int = BATCH,
        staff: StaffNotifier | None = None,
        webhooks: WebhookPlanner | None = None,
    ) -> None:
        self.sessions = sessions
        self.policy = policy
        self.sla_policy = sla_policy
        self.notifier = notifier
        self.routing = routing
        self.clock = clock
        self.batch = batch
        self.staff = staff  # agents' mail; None: agents are not notified
        self.webhooks = webhooks  # webhook deliveries; None: no hook is configured

    # --- what follows every change -------------------------------------------------------

    def after_change(
        self,
        session: Session,
        changes: list[Change],
        now: datetime | None = None,
        *,
        clocks_set: bool = False,
        index_later: list[int] | None = None,
    ) -> list[Queued]:
        """Inside the change's transaction: SLA clocks first (the mail may show them),
        then the outbox rows: the customers' mail, then the agents', then the webhook
        deliveries.

        `clocks_set`: a created ticket's clocks were set before its INSERT (ingest's
        `on_new`), not again. `index_later`: the tickets to (re)index are collected there
        for one set-based pass at the end of a batch, instead of indexed now."""
        now = now or self.clock()
        for ticket_id in _clock_tickets(changes, clocks_set):
            ticket = session.get(Ticket, ticket_id)
            if ticket is not None:
                refresh(ticket, self.sla_policy, now, fired_keys(session, ticket_id))
        texts = [c.ticket_id for c in changes if isinstance(c, TEXT_CHANGES)]
        if index_later is None:
            search.index(session, texts)
        else:
            index_later += texts
        queued = self.notifier.notify(session, changes, now)
        if self.staff is not None:
            queued += self.staff.notify(session, changes, now)
        if self.webhooks is not None:
            self.webhooks.plan(session, changes, now)
        return queued

    # --- the interfaces ------------------------------------------------------------------

    def ingest(self, raw_id: int) -> Outcome:
        """Turn one stored raw message into tickets (pipe, reprocess, the IMAP poller)."""
        return process(self.sessions, self.policy, raw_id, self._after_ingest, self._new_clocks)

    def ingest_batch(self, raw_ids: Sequence[int]) -> list[Outcome]:
        """Turn claimed rows into tickets in one transaction (cut by size: bounded
        memory), one bad mail ending `failed` alone; the search index once per batch."""
        pending_index: list[int] = []

        def after(session: Session, changes: list[Change]) -> None:
            self.after_change(session, changes, clocks_set=True, index_later=pending_index)

        def index(session: Session) -> None:
            search.index(session, pending_index)
            pending_index.clear()  # a batch of large mails commits in several groups

        return process_batch(self.sessions, self.policy, raw_ids, after, self._new_clocks, index)

    def act(self, number: int, action: Action, now: datetime | None = None) -> Acted:
        """One agent action on ticket `number`, in one transaction with its mail."""
        return self.change(lambda s: action(s, actions.load_ticket(s, number)), now)

    def change(
        self, action: Callable[[Session], list[Change]], now: datetime | None = None
    ) -> Acted:
        """Any change (an agent opening a ticket for a call), with its SLA and mail."""
        with self.sessions.begin() as session:
            changes = action(session)
            queued = self.after_change(session, changes, now)
        return Acted(changes, queued)

    # --- the scheduled passes ------------------------------------------------------------

    def scan_sla(self, now: datetime) -> int:
        """Act on every ticket whose SLA check is due, staff mail included."""

        def one(session: Session) -> tuple[int, int]:
            found = sla.scan(session, self.sla_policy, now, self.batch)
            notify_sla(session, found.changes, self.notifier.settings, self.routing, now)
            if self.webhooks is not None:
                self.webhooks.plan(session, found.changes, now)
            return found.checked, len(found.changes)

        return self._in_batches(one)

    def auto_close(self, now: datetime, after_days: float) -> int:
        """Close tickets resolved more than `after_days` ago (seed 004)."""

        def one(session: Session) -> tuple[int, int]:
            changes = close_resolved(session, now, after_days, self.batch)
            self.after_change(session, changes, now)
            return len(changes), len(changes)

        return self._in_batches(one)

    def remind(self, now: datetime, after_days: float) -> int:
        """Remind customers whose ticket has waited on them for `after_days`."""

        def one(session: Session) -> tuple[int, int]:
            tickets = tickets_to_remind(session, now, after_days, self.batch)
            for ticket in tickets:
                self.notifier.remind(session, ticket, now)
            return len(tickets), len(tickets)

        return self._in_batches(one)

    def _in_batches(self, one: Callable[[Session], tuple[int, int]]) -> int:
        """Run `one` transaction after another until a batch comes back short."""
        total = 0
        for _ in range(MAX_BATCHES):
            with self.sessions.begin() as session:
                taken, done = one(session)
            total += done
            if taken < self.batch:
                break
        return total

    def _after_ingest(self, session: Session, changes: list[Change]) -> None:
        self.after_change(session, changes, clocks_set=True)

    def _new_clocks(self, ticket: Ticket) -> None:
        """A ticket being opened from mail: its clocks, before its INSERT (nothing fired)."""
        refresh(ticket, self.sla_policy, self.clock(), {})


def _clock_tickets(changes: list[Change], clocks_set: bool) -> list[int]:
    """The tickets whose clocks these changes may move, each once."""
    moved = [
        c.ticket_id
        for c in changes
        if not isinstance(c, CLOCK_NEUTRAL) and not (clocks_set and isinstance(c, TicketCreated))
    ]
    return list(dict.fromkeys(moved))
