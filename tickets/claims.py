"""Claim → finish for the delivery queues (the outbox, webhook deliveries): a job takes a
pending row for a lease (`claimed_by`, `claimed_until`), then writes its outcome only if
it still holds the row. A claim that expired is free again, so a killed job's row is sent
again (at least once) and a slow job whose lease was taken never writes over the winner.

Conditional UPDATEs with a rowcount check work the same on SQLite and PostgreSQL: of two
jobs racing for a row, exactly one sees rowcount 1.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.orm import Session

from tickets.models import OutboxMessage, WebhookDelivery

PENDING = "pending"

# The queues that share the columns id, state, next_attempt_at, claimed_by, claimed_until.
Queue = type[OutboxMessage] | type[WebhookDelivery]


def due_ids(session: Session, queue: Queue, now: datetime, limit: int) -> list[int]:
    """Pending, due and unclaimed rows, oldest due first."""
    return list(
        session.scalars(
            select(queue.id)
            .where(queue.state == PENDING, queue.next_attempt_at <= now, _unclaimed(queue, now))
            .order_by(queue.next_attempt_at, queue.id)
            .limit(limit)
        )
    )


def claim(
    session: Session, queue: Queue, row_id: int, instance: str, now: datetime, seconds: float
) -> bool:
    """Take one row for `seconds`; False when another job holds it or it is done."""
    result = session.execute(
        update(queue)
        .where(queue.id == row_id, queue.state == PENDING, _unclaimed(queue, now))
        .values(claimed_until=now + timedelta(seconds=seconds), claimed_by=instance)
        .execution_options(synchronize_session=False)
    )
    return rowcount(result) == 1


def finish(session: Session, queue: Queue, row_id: int, instance: str, **values: Any) -> bool:
    """Write `values` to a row this job still holds and release it; False if the claim
    was lost (never double-write)."""
    result = session.execute(
        update(queue)
        .where(queue.id == row_id, queue.state == PENDING, queue.claimed_by == instance)
        .values(claimed_until=None, claimed_by=None, **values)
        .execution_options(synchronize_session=False)
    )
    return rowcount(result) == 1


def _unclaimed(queue: Queue, now: datetime) -> ColumnElement[bool]:
    return or_(queue.claimed_until.is_(None), queue.claimed_until < now)


def rowcount(result: object) -> int:
    """Rows an UPDATE or DELETE touched (a CursorResult; typed as Result by SQLAlchemy)."""
    return int(getattr(result, "rowcount", 0) or 0)
