"""SLA clocks: due times stored on the ticket, and the scan that acts on them.

Clocks start at creation; first response stops at the first public agent reply; both
pause while the ticket waits on the customer or is on hold. Each ticket carries
`sla_next_check_at`, the next moment something can happen to it, so that a scan is an
index range query whose cost grows with the due tickets, not with all tickets.
Each warning, breach and escalation tier happens once per ticket: its event carries a
`once_key` under a unique constraint, so two schedulers cannot both act.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from tickets.calendar import BusinessCalendar
from tickets.lifecycle import Status, record, record_once
from tickets.models import Event, Ticket

log = logging.getLogger("buzon.sla")

PAUSED = frozenset({Status.WAITING_ON_CUSTOMER.value, Status.ON_HOLD.value})
STOPPED = frozenset({Status.RESOLVED.value, Status.CLOSED.value})
PRIORITIES = ("P1", "P2", "P3", "P4")
HOUR = 3600.0


@dataclass(frozen=True)
class SlaWarning:
    ticket_id: int
    clock: str
    due_at: datetime | None


@dataclass(frozen=True)
class SlaBreached:
    ticket_id: int
    clock: str
    due_at: datetime | None


@dataclass(frozen=True)
class SlaEscalated:
    ticket_id: int
    tier: int


SlaChange = SlaWarning | SlaBreached | SlaEscalated
Fired = dict[str, datetime]  # once_key → when it fired


@dataclass(frozen=True)
class Target:
    first_response_hours: float
    resolution_hours: float


# Business hours; a support team's common defaults (P1 critical … P4 low).
DEFAULT_TARGETS = {
    "P1": Target(1, 8),
    "P2": Target(4, 24),
    "P3": Target(8, 45),
    "P4": Target(16, 90),
}


@dataclass(frozen=True)
class SlaPolicy:
    calendar: BusinessCalendar
    targets: dict[str, Target] = field(default_factory=lambda: dict(DEFAULT_TARGETS))
    category_targets: dict[str, dict[str, Target]] = field(default_factory=dict)
    warn_share: float = 0.75  # warn when this share of a target has passed
    tier2_after_hours: float = 4.0  # business hours from tier 1 to tier 2
    level1_breach_to_level2: bool = False
    level1_breach_team: str | None = None

    def target_for(self, ticket: Ticket) -> Target:
        by_category = self.category_targets.get(ticket.category, {})
        return (
            by_category.get(ticket.priority)
            or self.targets.get(ticket.priority)
            or (self.targets["P3"])
        )


@dataclass(frozen=True)
class Clock:
    """One clock's figures at a moment, for `buzon sla show` and the scan."""

    name: str  # first_response / resolution
    target_seconds: float
    due_at: datetime | None
    warn_at: datetime | None
    stopped_at: datetime | None
    paused: bool


# --- keeping the due times current ------------------------------------------------------


def refresh(ticket: Ticket, policy: SlaPolicy, now: datetime, fired: Fired | None = None) -> None:
    """Bring pause state and due times up to date after any change to the ticket.

    This is where the calendar arithmetic happens; the scan only compares stored times.
    """
    paused = ticket.status in PAUSED
    if paused and ticket.sla_paused_at is None:
        ticket.sla_paused_at = now
    elif not paused and ticket.sla_paused_at is not None:
        ticket.sla_paused_seconds += int(policy.calendar.between(ticket.sla_paused_at, now))
        ticket.sla_paused_at = None
    first, resolution = clocks_of(ticket, policy)
    ticket.first_response_due_at, ticket.first_response_warn_at = first.due_at, first.warn_at
    ticket.resolution_due_at, ticket.resolution_warn_at = resolution.due_at, resolution.warn_at
    ticket.sla_next_check_at = _next_check(ticket, policy, fired or {})


def clocks_of(ticket: Ticket, policy: SlaPolicy) -> list[Clock]:
    target = policy.target_for(ticket)
    paused = ticket.sla_paused_at is not None
    result = []
    for name, hours, stopped_at in (
        ("first_response", target.first_response_hours, ticket.first_response_at),
        ("resolution", target.resolution_hours, ticket.resolved_at or ticket.closed_at),
    ):
        seconds = hours * HOUR
        running = stopped_at is None and not paused and ticket.status not in STOPPED
        offset = ticket.sla_paused_seconds
        due = warn = None
        if running:
            due = policy.calendar.add(ticket.created_at, seconds + offset)
            warn = policy.calendar.add(ticket.created_at, seconds * policy.warn_share + offset)
        result.append(Clock(name, seconds, due, warn, stopped_at, paused))
    return result


def _stored_checkpoints(ticket: Ticket) -> list[tuple[str, datetime | None]]:
    return [
        ("sla:first_response:warning", ticket.first_response_warn_at),
        ("sla:first_response:breach", ticket.first_response_due_at),
        ("sla:resolution:warning", ticket.resolution_warn_at),
        ("sla:resolution:breach", ticket.resolution_due_at),
    ]


def _next_check(ticket: Ticket, policy: SlaPolicy, fired: Fired) -> datetime | None:
    moments = [at for key, at in _stored_checkpoints(ticket) if at and key not in fired]
    tier2 = _tier2_at(ticket, policy, fired)
    if tier2 is not None:
        moments.append(tier2)
    return min(moments) if moments else None


def _tier2_at(ticket: Ticket, policy: SlaPolicy, fired: Fired) -> datetime | None:
    tier1_at = fired.get("sla:tier:1")
    if ticket.level != 2 or tier1_at is None or "sla:tier:2" in fired:
        return None
    if ticket.status in STOPPED or ticket.sla_paused_at is not None:
        return None
    return policy.calendar.add(tier1_at, policy.tier2_after_hours * HOUR)


def fired_keys(session: Session, ticket_id: int) -> Fired:
    """The one-off SLA events a ticket has had, with when."""
    rows = session.execute(
        select(Event.once_key, Event.created_at).where(
            Event.ticket_id == ticket_id, Event.once_key.is_not(None)
        )
    )
    return {key: at for key, at in rows if key is not None}


# --- the scan -------------------------------------------------------------------------------


def due_ticket_ids(session: Session, now: datetime, limit: int) -> list[int]:
    """Tickets whose next check has come; locked rows (another scheduler) are skipped."""
    return list(
        session.scalars(
            select(Ticket.id)
            .where(Ticket.sla_next_check_at <= now)
            .order_by(Ticket.sla_next_check_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )


def check_ticket(
    session: Session, ticket: Ticket, policy: SlaPolicy, now: datetime
) -> list[SlaChange]:
    """Fire what is due on one ticket (each thing once) and schedule its next check."""
    fired = fired_keys(session, ticket.id)
    changes: list[SlaChange] = []
    for key, at in _stored_checkpoints(ticket):
        if at is None or at > now or not _claim(session, ticket.id, key, now, fired):
            continue
        clock, kind = key.split(":")[1:]
        if kind == "warning":
            changes.append(SlaWarning(ticket.id, clock, _due(ticket, clock)))
        else:
            changes += _breach(session, ticket, policy, clock, now, fired)
    tier2 = _tier2_at(ticket, policy, fired)
    if tier2 is not None and tier2 <= now and _claim(session, ticket.id, "sla:tier:2", now, fired):
        changes.append(SlaEscalated(ticket.id, 2))
    ticket.sla_next_check_at = _next_check(ticket, policy, fired)
    return changes


def _due(ticket: Ticket, clock: str) -> datetime | None:
    return ticket.first_response_due_at if clock == "first_response" else ticket.resolution_due_at


def _claim(session: Session, ticket_id: int, key: str, now: datetime, fired: Fired) -> bool:
    """Record the one-off event `key`; False when it exists (maybe by another scheduler)."""
    if key in fired:
        return False
    inserted = record_once(session, ticket_id, key, "sla", "buzon-sla", now)
    fired[key] = now
    if inserted:
        log.info("sla ticket=%s %s", ticket_id, key)
    return inserted


def _breach(
    session: Session, ticket: Ticket, policy: SlaPolicy, clock: str, now: datetime, fired: Fired
) -> list[SlaChange]:
    changes: list[SlaChange] = [SlaBreached(ticket.id, clock, _due(ticket, clock))]
    if ticket.level == 2:
        if _claim(session, ticket.id, "sla:tier:1", now, fired):
            _raise_priority(session, ticket, policy, now, fired)
            changes.append(SlaEscalated(ticket.id, 1))
    elif policy.level1_breach_to_level2:
        record(
            session,
            ticket,
            "level",
            "buzon-sla",
            field="level",
            old=1,
            new=2,
            reason=f"{clock} SLA breached",
        )
        ticket.level = 2
        if policy.level1_breach_team:
            record(
                session,
                ticket,
                "team",
                "buzon-sla",
                field="team",
                old=ticket.team,
                new=policy.level1_breach_team,
            )
            ticket.team = policy.level1_breach_team
    return changes


def _raise_priority(
    session: Session, ticket: Ticket, policy: SlaPolicy, now: datetime, fired: Fired
) -> None:
    old = ticket.priority
    if old not in PRIORITIES or old == PRIORITIES[0]:
        return
    ticket.priority = PRIORITIES[PRIORITIES.index(old) - 1]
    record(
        session,
        ticket,
        "priority",
        "buzon-sla",
        field="priority",
        old=old,
        new=ticket.priority,
        reason="SLA breach on a second-level ticket",
    )
    refresh(ticket, policy, now, fired)  # the new priority has its own targets


@dataclass(frozen=True)
class ScanPass:
    """One pass of the scan: how many due tickets it took, and what fired."""

    checked: int
    changes: list[SlaChange]


def scan(session: Session, policy: SlaPolicy, now: datetime, limit: int = 500) -> ScanPass:
    """One pass over at most `limit` due tickets (call inside a transaction); fewer than
    `limit` checked means nothing else is due now (or the rest is locked elsewhere)."""
    ids = due_ticket_ids(session, now, limit)
    changes: list[SlaChange] = []
    for ticket_id in ids:
        ticket = session.get(Ticket, ticket_id)
        if ticket is not None:
            changes += check_ticket(session, ticket, policy, now)
    return ScanPass(len(ids), changes)
