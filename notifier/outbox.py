"""The outbox rows: written with the change that causes the mail, then claimed, sent or
failed by the delivery job. A row's Message-ID is fixed when it is written, so a retry
sends the very same message and a reply to it threads back whatever happens meanwhile.

States: pending → sent | failed. A pending row may carry a claim (`claimed_by`,
`claimed_until`) while a delivery job is sending it; a claim that expired is free again.
"""

from __future__ import annotations

from datetime import datetime
from email.message import EmailMessage
from typing import Any

from sqlalchemy import Table, insert, select
from sqlalchemy.orm import Session

from notifier.errors import OutboxError
from notifier.planned import serialise
from tickets import claims
from tickets.models import OutboxMessage, OutboxRecipient

SENT, FAILED = "sent", "failed"
PENDING = claims.PENDING

# Built once: the values come as parameters (the statement is the same for every mail).
# Core, on the session's connection: the row's id is all a caller needs, not an object.
_ROWS, _BUDGET = OutboxMessage.__table__, OutboxRecipient.__table__
assert isinstance(_ROWS, Table) and isinstance(_BUDGET, Table)
_INSERT_ROW = insert(_ROWS).returning(_ROWS.c.id)
_INSERT_RECIPIENTS = insert(_BUDGET)


def enqueue(
    session: Session,
    message: EmailMessage | None = None,
    *,
    plan: dict[str, Any] | None = None,
    message_id: str,
    kind: str,
    mail_from: str,
    recipients: list[str],
    ticket_id: int | None,
    article_id: int | None,
    automatic: bool,
    now: datetime,
) -> int:
    """Add the row (and, for automatic mail, one budget row per recipient): either the
    `plan` of the mail, made into bytes at delivery (`notifier.planned`), or a built
    `message`, serialised now. Returns the row's id."""
    if (message is None) == (plan is None):
        raise ValueError("enqueue takes a message or a plan")
    # INSERT..RETURNING the id, and one executemany for its budget rows: no unit of work
    # to flush nor object to build (the notifier writes one of these per mail). The
    # budget rows are in the table at once: the next budget count in this transaction
    # sees them. What the session holds unflushed is flushed first, as the ORM would.
    session.flush()
    connection = session.connection()
    values = {
        "ticket_id": ticket_id,
        "article_id": article_id,
        "kind": kind,
        "message_id": message_id,
        "mail_from": mail_from,
        "recipients": list(recipients),
        "raw": serialise(message, recipients) if message is not None else None,
        "plan": plan,
        "state": PENDING,
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }
    row_id: int = connection.execute(_INSERT_ROW, values).scalar_one()
    if automatic and recipients:
        connection.execute(
            _INSERT_RECIPIENTS,
            [
                {"outbox_id": row_id, "email": email, "ticket_id": ticket_id, "created_at": now}
                for email in recipients
            ],
        )
    return row_id


# --- claiming, for the delivery job ---------------------------------------------------------


def due_ids(session: Session, now: datetime, limit: int) -> list[int]:
    return claims.due_ids(session, OutboxMessage, now, limit)


def claim(session: Session, row_id: int, instance: str, now: datetime, seconds: int) -> bool:
    """Take one row for `seconds`; False when another job holds it or it is done."""
    return claims.claim(session, OutboxMessage, row_id, instance, now, seconds)


def _finish(session: Session, row_id: int, instance: str, **values: Any) -> bool:
    return claims.finish(session, OutboxMessage, row_id, instance, **values)


def mark_sent(session: Session, row_id: int, instance: str, now: datetime, attempts: int) -> bool:
    return _finish(
        session, row_id, instance, state=SENT, sent_at=now, attempts=attempts, last_error=None
    )


def mark_retry(
    session: Session,
    row_id: int,
    instance: str,
    *,
    attempts: int,
    next_attempt_at: datetime,
    error: str,
    recipients: list[str] | None = None,
) -> bool:
    values: dict[str, Any] = {
        "attempts": attempts,
        "next_attempt_at": next_attempt_at,
        "last_error": error[:1000],
    }
    if recipients is not None:  # only those that still have to receive it
        values["recipients"] = recipients
    return _finish(session, row_id, instance, **values)


def mark_failed(session: Session, row_id: int, instance: str, *, attempts: int, error: str) -> bool:
    return _finish(
        session, row_id, instance, state=FAILED, attempts=attempts, last_error=error[:1000]
    )


# --- operators ------------------------------------------------------------------------------


def list_rows(
    session: Session, *, state: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    query = select(OutboxMessage).order_by(OutboxMessage.id.desc()).limit(limit)
    if state:
        query = query.where(OutboxMessage.state == state)
    return [
        {
            "id": r.id,
            "state": r.state,
            "kind": r.kind,
            "ticket": r.ticket_id,
            "recipients": r.recipients,
            "message_id": r.message_id,
            "attempts": r.attempts,
            "next_attempt_at": r.next_attempt_at,
            "last_error": r.last_error,
            "created_at": r.created_at,
            "sent_at": r.sent_at,
        }
        for r in session.scalars(query)
    ]


def retry(session: Session, row_id: int, now: datetime) -> OutboxMessage:
    """Put a failed (or waiting) row back in line for the next delivery pass."""
    row = session.get(OutboxMessage, row_id, with_for_update=True)
    if row is None:
        raise OutboxError(f"no outbox message {row_id}")
    if row.state == SENT:
        raise OutboxError(f"outbox message {row_id} was already sent at {row.sent_at}")
    row.state = PENDING
    row.next_attempt_at = now
    row.claimed_until = row.claimed_by = None
    if row.last_error and row.attempts:
        row.attempts = 0  # a fresh series of attempts, with the backoff starting over
    return row
