"""Time-driven ticket changes the scheduler makes: auto-close and customer reminders.

Both are safe with several schedulers on one database: rows are taken with
`FOR UPDATE SKIP LOCKED` (PostgreSQL; SQLite serialises writers) and re-checked once
locked, and a reminder is claimed through a unique `once_key` before it is mailed.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import and_, exists, select
from sqlalchemy.orm import Session

from tickets.changes import Change
from tickets.lifecycle import Status, change_status, record_once
from tickets.models import Event, Ticket

log = logging.getLogger("buzon.housekeeping")

ACTOR = "buzon-scheduler"
REMINDER = "reminder"


def close_resolved(session: Session, now: datetime, after_days: float, limit: int) -> list[Change]:
    """Close tickets resolved for `after_days` (calendar days) without a customer reply."""
    cutoff = now - timedelta(days=after_days)
    ids = session.scalars(
        select(Ticket.id)
        .where(Ticket.status == Status.RESOLVED.value, Ticket.resolved_at <= cutoff)
        .order_by(Ticket.resolved_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    changes: list[Change] = []
    for ticket_id in ids:
        ticket = session.get(Ticket, ticket_id, populate_existing=True)
        # Re-checked after the lock: a reply may have reopened it meanwhile.
        if ticket is None or ticket.status != Status.RESOLVED.value:
            continue
        note = f"closed automatically after {after_days:g} days resolved"
        changes += change_status(session, ticket, Status.CLOSED.value, ACTOR, note=note, now=now)
        log.info("auto-closed ticket=%s", ticket_id)
    return changes


def reminder_key(ticket: Ticket) -> str:
    """One reminder per waiting period: the period is named by when it began."""
    assert ticket.sla_paused_at is not None
    return f"{REMINDER}:{ticket.sla_paused_at.isoformat()}"


def tickets_to_remind(
    session: Session, now: datetime, after_days: float, limit: int
) -> list[Ticket]:
    """Tickets waiting on the customer for `after_days` whose reminder is now claimed.

    The NOT EXISTS keeps the scan to tickets not yet reminded in this waiting period;
    the claim makes it once even when two schedulers race.
    """
    cutoff = now - timedelta(days=after_days)
    reminded = exists().where(
        and_(
            Event.ticket_id == Ticket.id,
            Event.kind == REMINDER,
            Event.created_at >= Ticket.sla_paused_at,
        )
    )
    ids = session.scalars(
        select(Ticket.id)
        .where(
            Ticket.status == Status.WAITING_ON_CUSTOMER.value,
            Ticket.sla_paused_at <= cutoff,
            ~reminded,
        )
        .order_by(Ticket.sla_paused_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    due = []
    for ticket_id in ids:
        ticket = session.get(Ticket, ticket_id, populate_existing=True)
        if ticket is None or ticket.status != Status.WAITING_ON_CUSTOMER.value:
            continue
        if ticket.sla_paused_at is None:
            continue
        if record_once(session, ticket.id, reminder_key(ticket), REMINDER, ACTOR, now, REMINDER):
            due.append(ticket)
    return due
