"""Statuses and the transitions allowed between them: the one place that decides."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from sqlalchemy import Table, insert
from sqlalchemy.orm import Session

from tickets.changes import Change, StatusChanged
from tickets.errors import InvalidTransition
from tickets.models import Event, Ticket, utcnow

if TYPE_CHECKING:
    from sqlalchemy.dialects.postgresql import Insert as PgInsert
    from sqlalchemy.dialects.sqlite import Insert as SqliteInsert


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


def record_once(
    session: Session,
    ticket_id: int,
    key: str,
    kind: str,
    actor: str,
    now: datetime,
    field: str | None = None,
) -> bool:
    """Record the one-off event `key` (an SLA step, a reminder); False when it exists
    already, perhaps written a moment ago by another instance's scheduler."""
    values = {
        "ticket_id": ticket_id,
        "kind": kind,
        "field": field or key.removeprefix(f"{kind}:"),
        "actor": actor,
        "once_key": key,
        "created_at": now,
        "data": {},
    }
    # The dialects' insert constructs are imported here: loading both dialect packages
    # (PostgreSQL's brings its four drivers) costs a read-only command tens of ms.
    table = Event.__table__
    assert isinstance(table, Table)
    upsert: PgInsert | SqliteInsert
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        upsert = pg_insert(table)
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        upsert = sqlite_insert(table)
    statement = upsert.values(**values).on_conflict_do_nothing().returning(table.c.id)
    # RETURNING, not rowcount: drivers disagree on rowcount for ON CONFLICT DO NOTHING.
    return session.execute(statement).first() is not None


# What people type for a status: the code names, the customer-facing Spanish names
# (DESIGN.md) and the words agents use; accents, case, spaces and "_" do not matter.
_STATUS_WORDS: dict[str, Status] = {
    **{s.value.replace("_", " "): s for s in Status},
    "enviado": Status.NEW,
    "nuevo": Status.NEW,
    "en curso": Status.IN_PROGRESS,
    "en proceso": Status.IN_PROGRESS,
    "a la espera de tu respuesta": Status.WAITING_ON_CUSTOMER,
    "a la espera": Status.WAITING_ON_CUSTOMER,
    "esperando al cliente": Status.WAITING_ON_CUSTOMER,
    "waiting": Status.WAITING_ON_CUSTOMER,
    "suspendido": Status.ON_HOLD,
    "en espera": Status.ON_HOLD,
    "en pausa": Status.ON_HOLD,
    "resuelto": Status.RESOLVED,
    "cerrado": Status.CLOSED,
}
_OPEN_WORDS = frozenset({"open", "abierto", "abiertos", "abierta", "abiertas"})


def status_named(name: str) -> Status:
    """The status a person means by `name`; refuses anything else, naming the choices."""
    status = _STATUS_WORDS.get(_words(name))
    if status is None:
        names = ", ".join(f"{s.value} ({_SPANISH[s]})" for s in Status)
        raise InvalidTransition(f"unknown status {name!r}; one of: {names}")
    return status


# The Spanish name an error message offers for each status.
_SPANISH = {
    Status.NEW: "nuevo",
    Status.IN_PROGRESS: "en curso",
    Status.WAITING_ON_CUSTOMER: "a la espera",
    Status.ON_HOLD: "en espera",
    Status.RESOLVED: "resuelto",
    Status.CLOSED: "cerrado",
}


def statuses_named(name: str) -> tuple[Status, ...]:
    """As `status_named`, plus "open" / "abiertos" for every status not resolved or closed."""
    if _words(name) in _OPEN_WORDS:
        return tuple(s for s in Status if s in _OPEN)
    return (status_named(name),)


def _words(name: str) -> str:
    decomposed = unicodedata.normalize("NFKD", name.casefold().replace("_", " "))
    return " ".join("".join(c for c in decomposed if not unicodedata.combining(c)).split())


def check_transition(old: str, new: str) -> Status:
    target = status_named(new)
    if target not in TRANSITIONS[Status(old)]:
        allowed = ", ".join(sorted(TRANSITIONS[Status(old)])) or "none (closed is final)"
        raise InvalidTransition(f"cannot move from {old} to {new}; allowed: {allowed}")
    return target


# `session.info` key: the events a batch's optimistic pass holds for one executemany at
# its end (see `defer_events`).
DEFERRED = "buzon.lifecycle.deferred"


def record(session: Session, ticket: Ticket, kind: str, actor: str, **fields: object) -> None:
    """Write one history event on the ticket (`at=` dates it; default: now), or hold
    it for the transaction's one INSERT after `defer_events`."""
    at = fields.pop("at", None)
    values: dict[str, object] = {
        "kind": kind,
        "actor": actor,
        "field": fields.pop("field", None),
        "old_value": _text(fields.pop("old", None)),
        "new_value": _text(fields.pop("new", None)),
        "once_key": fields.pop("once_key", None),
        "data": {k: v for k, v in fields.items() if v is not None},
    }
    held = session.info.get(DEFERRED)
    if held is not None and values["once_key"] is None:
        values["created_at"] = at if isinstance(at, datetime) else utcnow()
        held.append((ticket, values))
        return
    event = Event(ticket=ticket, **values)
    if isinstance(at, datetime):
        event.created_at = at
    session.add(event)


def defer_events(session: Session) -> None:
    """From now on the transaction's events are held and written by `write_deferred`
    in one statement: the ORM would insert each alone (on SQLite it reads every new id
    back). Only for a transaction that nothing reads the events of before its end, and
    that a failure rolls back whole (a savepoint would not take back a held event). A
    one-off event (`once_key`) is written at once: its uniqueness is checked there."""
    session.info[DEFERRED] = []


def write_deferred(session: Session) -> None:
    """Write the held events, in the order they were recorded (the history's order)."""
    held: list[tuple[Ticket, dict[str, object]]] = session.info.get(DEFERRED) or []
    if not held:
        return
    session.flush()  # the tickets opened since the last flush get their ids
    table = Event.__table__
    assert isinstance(table, Table)
    session.execute(insert(table), [values | {"ticket_id": ticket.id} for ticket, values in held])
    held.clear()


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def change_status(
    session: Session,
    ticket: Ticket,
    new: str,
    actor: str,
    note: str | None = None,
    *,
    internal: bool = False,
    now: datetime | None = None,
) -> list[Change]:
    """Move a ticket to `new`, enforcing the transition table; returns the change.

    `internal` marks a move customers are not told about (an escalation's reset to new).
    """
    old = ticket.status
    if old == status_named(new).value:
        raise InvalidTransition(f"ticket #{ticket.id} is already {old}")
    target = check_transition(old, new)
    now = now or utcnow()
    ticket.status = target.value
    if target is Status.RESOLVED:
        ticket.resolved_at = now
    elif target is Status.CLOSED:
        ticket.closed_at = now
    elif old == Status.RESOLVED:
        ticket.resolved_at = None
    record(
        session,
        ticket,
        "status",
        actor,
        field="status",
        old=old,
        new=target.value,
        note=note,
        at=now,
    )
    return [StatusChanged(ticket.id, old, target.value, actor, internal=internal)]


# --- time spent per level and team ---------------------------------------------------------

Mark = tuple[datetime, str | None, str | None]  # (when, field, new value) of one event
_TRACKED = frozenset({"level", "team", "status"})
_STOPPED = frozenset({Status.RESOLVED.value, Status.CLOSED.value})


@dataclass
class TimeSpent:
    """Open wall-clock seconds the ticket spent at each level and with each team."""

    by_level: dict[int, float] = field(default_factory=dict)
    by_team: dict[str, float] = field(default_factory=dict)  # "" = no team (first line)


def time_spent(created_at: datetime, marks: Iterable[Mark], until: datetime) -> TimeSpent:
    """Replay the level, team and status events from creation to `until`.

    Time counts while the ticket is open (resolved/closed stop it, a reopening resumes
    it), so the figures stay right after an escalation back and forth. The events are
    the only input: nothing has to be cloned to keep a level's handling time (seed 000).
    """
    result = TimeSpent()
    level, team, open_ = 1, "", True
    since = created_at
    for at, name, value in sorted((m for m in marks if m[1] in _TRACKED), key=lambda m: m[0]):
        at = min(max(at, since), until)
        if open_:
            _add(result, level, team, (at - since).total_seconds())
        since = at
        if name == "level" and value is not None:
            level = int(value)
        elif name == "team":
            team = value or ""
        elif name == "status":
            open_ = value not in _STOPPED
    if open_ and until > since:
        _add(result, level, team, (until - since).total_seconds())
    return result


def _add(result: TimeSpent, level: int, team: str, seconds: float) -> None:
    if seconds <= 0:
        return
    result.by_level[level] = result.by_level.get(level, 0.0) + seconds
    result.by_team[team] = result.by_team.get(team, 0.0) + seconds


def event_marks(events: Iterable[Event]) -> list[Mark]:
    return [(e.created_at, e.field, e.new_value) for e in events]
