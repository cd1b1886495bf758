"""Webhook events: domain changes turned into JSON events, one delivery row per hook.

The planner runs inside the transaction of the change (the desk calls it after every
change and after the SLA scan), so a delivery row exists exactly when its change does.
Delivery itself (HTTP, signatures) is `notifier.webhooks`; this module only writes rows
and moves them between states: pending → sent | dead, with a claim while in flight.

Each row carries its own idempotency key, which is also the payload's `id`: a receiver
that gets the same body twice (at-least-once) drops the repeat by that key.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tickets import claims
from tickets.changes import (
    AgentReplied,
    Assigned,
    Change,
    CustomerReplied,
    Escalated,
    Imported,
    NoteAdded,
    StatusChanged,
    TicketCreated,
)
from tickets.errors import TicketError, TicketNotFound
from tickets.facts import ticket_facts
from tickets.models import Article, Ticket, WebhookDelivery
from tickets.sla import SlaBreached, SlaChange, SlaWarning

SENT, DEAD = "sent", "dead"
PENDING = claims.PENDING
STATES = (PENDING, SENT, DEAD)

EVENTS = (
    "ticket.created",
    "article.added",
    "status.changed",
    "ticket.assigned",
    "ticket.escalated",
    "sla.warning",
    "sla.breached",
)


class DeliveryNotFound(TicketNotFound):
    pass


@dataclass(frozen=True)
class Hook:
    """A configured receiver as the domain sees it: a name and the events it wants."""

    name: str
    events: frozenset[str] = frozenset()  # empty: every event

    def wants(self, event: str) -> bool:
        return not self.events or event in self.events


@dataclass(frozen=True)
class WebhookEvent:
    """One event of one ticket, before it is addressed to any hook."""

    name: str
    ticket_id: int
    data: dict[str, Any]


class WebhookPlanner:
    """Writes one pending delivery per (event, hook that wants it) in the caller's
    transaction."""

    def __init__(self, hooks: Sequence[Hook]) -> None:
        self.hooks = tuple(hooks)

    def plan(
        self, session: Session, changes: Iterable[Change | SlaChange], now: datetime
    ) -> list[WebhookDelivery]:
        changes = list(changes)
        imported = {c.ticket_id for c in changes if isinstance(c, Imported)}
        rows = []
        for change in changes:
            event = event_of(session, change)
            ticket = session.get(Ticket, event.ticket_id) if event else None
            if event is None or ticket is None:
                continue
            for hook in self.hooks:
                if hook.wants(event.name):
                    rows.append(_row(hook, event, ticket, now, event.ticket_id in imported))
        session.add_all(rows)
        return rows


def event_of(session: Session, change: Change | SlaChange) -> WebhookEvent | None:
    """The webhook event of a domain change; None for changes no event is made of
    (priority, category, participants, merges, refused agent mail)."""
    match change:
        case TicketCreated(ticket_id, article_id):
            return WebhookEvent("ticket.created", ticket_id, _article(session, article_id))
        case (
            CustomerReplied(ticket_id, article_id)
            | AgentReplied(ticket_id, article_id)
            | NoteAdded(ticket_id, article_id)
        ):
            return WebhookEvent("article.added", ticket_id, _article(session, article_id))
        case StatusChanged(ticket_id, old, new, actor, internal):
            data = {"old": old, "new": new, "actor": actor, "internal": internal}
            return WebhookEvent("status.changed", ticket_id, data)
        case Assigned(ticket_id, assignee, team, actor, previous, note, _):
            data = {"assignee": assignee, "team": team, "previous": previous}
            return WebhookEvent("ticket.assigned", ticket_id, data | {"actor": actor, "note": note})
        case Escalated(ticket_id, team, kind, actor, reason):
            data = {"team": team, "type": kind, "actor": actor, "reason": reason}
            return WebhookEvent("ticket.escalated", ticket_id, data)
        case SlaWarning(ticket_id, clock, due_at):
            return WebhookEvent("sla.warning", ticket_id, {"clock": clock, "due_at": iso(due_at)})
        case SlaBreached(ticket_id, clock, due_at):
            return WebhookEvent("sla.breached", ticket_id, {"clock": clock, "due_at": iso(due_at)})
    return None


def _article(session: Session, article_id: int) -> dict[str, Any]:
    """The article's facts and its new text (quoted history left out). Notes are
    included, marked `public: false`: the receiver is ours, the customer never sees it."""
    article = session.get(Article, article_id)
    if article is None:
        return {"article": None}
    return {
        "article": {
            "id": article.id,
            "kind": article.kind,
            "public": article.kind != "note",
            "author": article.author or article.from_addr,
            "subject": article.subject,
            "text": article.new_text or article.text,
            "attachments": [
                {"filename": a.filename, "content_type": a.content_type, "size": a.size}
                for a in article.attachments
                if not a.inline
            ],
            "created_at": iso(article.created_at),
        }
    }


def _row(
    hook: Hook, event: WebhookEvent, ticket: Ticket, now: datetime, imported: bool
) -> WebhookDelivery:
    key = uuid.uuid4().hex
    payload = {
        "id": key,
        "event": event.name,
        "occurred_at": iso(now),
        "ticket": ticket_facts(ticket),
        "data": event.data | ({"imported": True} if imported else {}),
    }
    return WebhookDelivery(
        hook=hook.name,
        event=event.name,
        ticket_id=ticket.id,
        idempotency_key=key,
        # The exact body that is signed and sent on every attempt.
        payload=json.dumps(payload, ensure_ascii=False, separators=(",", ":")),
        state=PENDING,
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    )


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC; stored times without a zone are UTC (SQLite drops it)."""
    if moment is None:
        return None
    return _aware(moment).astimezone(UTC).isoformat().replace("+00:00", "Z")


# --- the delivery queue -----------------------------------------------------------------------


@dataclass(frozen=True)
class Claimed:
    """What a delivery job needs of a row it holds, read inside the claim's transaction."""

    id: int
    hook: str
    event: str
    idempotency_key: str
    payload: str
    attempts: int


def due_ids(session: Session, now: datetime, limit: int) -> list[int]:
    return claims.due_ids(session, WebhookDelivery, now, limit)


def claim(
    session: Session, row_id: int, instance: str, now: datetime, seconds: float
) -> Claimed | None:
    """Take one row for `seconds` (`tickets.claims`); None when another job holds it or
    it is done. A job killed while holding a row leaves a claim that expires; the row is
    then sent again (at least once)."""
    if not claims.claim(session, WebhookDelivery, row_id, instance, now, seconds):
        return None
    row = session.get(WebhookDelivery, row_id, populate_existing=True)
    assert row is not None
    return Claimed(row.id, row.hook, row.event, row.idempotency_key, row.payload, row.attempts)


def mark_sent(session: Session, row: Claimed, instance: str, now: datetime) -> bool:
    return _finish(
        session,
        row.id,
        instance,
        state=SENT,
        attempts=row.attempts + 1,
        delivered_at=now,
        last_error=None,
    )


def mark_failed(
    session: Session,
    row: Claimed,
    instance: str,
    error: str,
    retry_at: datetime | None,
) -> bool:
    """A failed attempt: pending again from `retry_at`, or dead when it is None."""
    values: dict[str, Any] = {"attempts": row.attempts + 1, "last_error": error[:1000]}
    if retry_at is None:
        values["state"] = DEAD
    else:
        values["next_attempt_at"] = retry_at
    return _finish(session, row.id, instance, **values)


def _finish(session: Session, row_id: int, instance: str, **values: Any) -> bool:
    return claims.finish(session, WebhookDelivery, row_id, instance, **values)


# --- operators (CLI and API) ------------------------------------------------------------------


def list_deliveries(
    session: Session, *, state: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """Deliveries, newest first, as plain data (the payload is left out: it may carry
    customers' text; `buzon webhooks list --json` is read by people)."""
    if state is not None and state not in STATES:
        raise TicketError(f"unknown state {state!r}: one of {', '.join(STATES)}")
    query = select(WebhookDelivery).order_by(WebhookDelivery.id.desc()).limit(limit)
    if state:
        query = query.where(WebhookDelivery.state == state)
    return [_listed(row) for row in session.scalars(query)]


def _listed(row: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": row.id,
        "hook": row.hook,
        "event": row.event,
        "ticket": row.ticket_id,
        "idempotency_key": row.idempotency_key,
        "state": row.state,
        "attempts": row.attempts,
        "next_attempt_at": iso(row.next_attempt_at),
        "last_error": row.last_error,
        "created_at": iso(row.created_at),
        "delivered_at": iso(row.delivered_at),
    }


def retry(session: Session, row_id: int, now: datetime) -> dict[str, Any]:
    """Put a dead (or waiting) delivery back in line, with a fresh series of attempts."""
    row = session.get(WebhookDelivery, row_id, with_for_update=True)
    if row is None:
        raise DeliveryNotFound(f"no webhook delivery {row_id}")
    if row.state == SENT:
        raise TicketError(f"webhook delivery {row_id} was already sent at {iso(row.delivered_at)}")
    if row.claimed_until is not None and _aware(row.claimed_until) > _aware(now):
        # Freeing its claim would let a second job send it while the first still is.
        raise TicketError(f"webhook delivery {row_id} is being sent right now")
    _requeue(row, now)
    return _listed(row)


def retry_dead(session: Session, now: datetime) -> int:
    """Every dead delivery back in line; how many."""
    rows = session.scalars(
        select(WebhookDelivery).where(WebhookDelivery.state == DEAD).with_for_update()
    ).all()
    for row in rows:
        _requeue(row, now)
    return len(rows)


def _requeue(row: WebhookDelivery, now: datetime) -> None:
    row.state = PENDING
    row.attempts = 0
    row.next_attempt_at = now
    row.claimed_until = row.claimed_by = None


def counts_by_state(session: Session) -> Mapping[str, int]:
    """Deliveries per state (every state present, zero included), for the metrics."""
    found = dict(
        session.execute(
            select(WebhookDelivery.state, func.count()).group_by(WebhookDelivery.state)
        ).all()
    )
    return {state: int(found.get(state, 0)) for state in STATES}
