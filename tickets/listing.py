"""The tickets list as agents filter it, for every interface (CLI, API, console): the
names people type are checked against the catalogue, SLA windows become a due time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from tickets import queries, search
from tickets.actions import Catalogue
from tickets.lifecycle import statuses_named

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: str) -> timedelta:
    """'90m', '2h', '1d' or plain seconds (an SLA window agents type)."""
    text = value.strip().lower()
    unit = _UNITS.get(text[-1:])
    try:
        amount = float(text[:-1] if unit else text)
    except ValueError:
        raise ValueError(f"{value!r} is not a duration like 30m, 2h or 1d") from None
    return timedelta(seconds=amount * (unit or 1))


@dataclass(frozen=True)
class TicketFilters:
    status: str | None = None  # "new", "resuelto", "abiertos", …
    level: int | None = None
    requester: str | None = None
    team: str | None = None
    assignee: str | None = None
    category: str | None = None
    tag: str | None = None
    words: str | None = None
    breached: bool = False  # past an SLA due time
    due_within: timedelta | None = None  # due before now + this


def list_tickets(
    session: Session,
    catalogue: Catalogue,
    filters: TicketFilters,
    now: datetime,
    *,
    limit: int = 100,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Tickets, newest first (by due time with `breached` / `due_within`); an unknown
    status, category or team is refused with the choices."""
    f = filters
    due_before = None
    if f.breached or f.due_within is not None:
        due_before = now + (f.due_within or timedelta(0))
    if f.status:
        statuses_named(f.status)  # refuses an unknown one before any query runs
    category = catalogue.category(f.category) if f.category is not None else None
    team = f.team
    if team is not None and catalogue.teams:
        team = catalogue.team(team)
    return queries.list_tickets(
        session,
        status=f.status,
        level=f.level,
        requester=f.requester,
        due_before=due_before,
        team=team,
        assignee=f.assignee,
        category=category,
        tag=f.tag,
        words=f.words,
        limit=limit,
        offset=offset,
    )


def search_tickets(session: Session, words: str, limit: int = 20) -> list[dict[str, Any]]:
    """Tickets whose subject or mails contain `words` (any inflection, any accents),
    best match first."""
    numbers = search.search(session, words, limit)
    found = queries.list_tickets(session, numbers=numbers, limit=limit)
    by_number = {t["number"]: t for t in found}
    return [by_number[n] for n in numbers if n in by_number]
