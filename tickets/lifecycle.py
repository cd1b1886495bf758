"""Statuses and the transitions allowed between them: the one place that decides."""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy.orm import Session

from tickets.changes import Change, StatusChanged
from tickets.errors import InvalidTransition
from tickets.models import Event, Ticket, utcnow


class Status(StrEnum):
    NEW = "new"
    IN_PROGRESS = "in_progress"
    WAITING_ON_CUSTOMER = "waiting_on_customer"
    ON_HOLD = "on_hold"
    RESOLVED = "resolved"
    CLOSED = "closed"


_OPEN = {Status.NEW, Status.IN_PROGRESS, Status.WAITING_ON_CUSTOMER, Status.ON_HOLD}

TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.NEW: frozenset(_OPEN - {Status.NEW} | {Status.RESOLVED, Status.CLOSED}),
    Status.IN_PROGRESS: frozenset(_OPEN - {Status.IN_PROGRESS} | {Status.RESOLVED, Status.CLOSED}),
    Status.WAITING_ON_CUSTOMER: frozenset(
        _OPEN - {Status.WAITING_ON_CUSTOMER} | {Status.RESOLVED, Status.CLOSED}
    ),
    Status.ON_HOLD: frozenset(_OPEN - {Status.ON_HOLD} | {Status.RESOLVED, Status.CLOSED}),
    Status.RESOLVED: frozenset({Status.IN_PROGRESS, Status.CLOSED}),
    Status.CLOSED: frozenset(),
}

OPEN_STATUSES = frozenset(_OPEN)


def check_transition(old: str, new: str) -> Status:
    try:
        target = Status(new)
    except ValueError:
        names = ", ".join(s.value for s in Status)
        raise InvalidTransition(f"unknown status {new!r}; one of: {names}") from None
    if target not in TRANSITIONS[Status(old)]:
        allowed = ", ".join(sorted(TRANSITIONS[Status(old)])) or "none (closed is final)"
        raise InvalidTransition(f"cannot move from {old} to {new}; allowed: {allowed}")
    return target


def record(session: Session, ticket: Ticket, kind: str, actor: str, **fields: object) -> Event:
    """Write one history event on the ticket."""
    event = Event(
        ticket=ticket,
        kind=kind,
        actor=actor,
        field=fields.pop("field", None),  # type: ignore[arg-type]
        old_value=_text(fields.pop("old", None)),
        new_value=_text(fields.pop("new", None)),
        once_key=fields.pop("once_key", None),  # type: ignore[arg-type]
        data={k: v for k, v in fields.items() if v is not None},
    )
    session.add(event)
    return event


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def change_status(
    session: Session, ticket: Ticket, new: str, actor: str, note: str | None = None
) -> list[Change]:
    """Move a ticket to `new`, enforcing the transition table; returns the change."""
    old = ticket.status
    target = check_transition(old, new)
    now = utcnow()
    ticket.status = target.value
    if target is Status.RESOLVED:
        ticket.resolved_at = now
    elif target is Status.CLOSED:
        ticket.closed_at = now
    elif old == Status.RESOLVED:
        ticket.resolved_at = None
    record(session, ticket, "status", actor, field="status", old=old, new=target.value, note=note)
    return [StatusChanged(ticket.id, old, target.value, actor)]
