"""The delivery job: claim due outbox rows, hand them to the transport, record the result.

`deliver_due` is a plain function so that the CLI, the scheduler and tests call the same
thing. Each row is claimed by a conditional UPDATE before it is sent, so two jobs never
send one row; the claim outlives the transport's timeout by design (see
`outbound.claim_seconds`). A transient failure reschedules the row with exponential
backoff; a permanent one fails it and marks the refused addresses as bouncing.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from notifier import outbox
from notifier.errors import PermanentDeliveryError, TransientDeliveryError
from notifier.planned import Materializer
from notifier.render import Renderer
from notifier.retry import RetryPolicy
from notifier.transports import SendResult, Transport
from tickets.addresses import clear_bouncing, mark_bouncing
from tickets.errors import describe
from tickets.lifecycle import record
from tickets.models import OutboxMessage, Ticket, utcnow

log = logging.getLogger("buzon.delivery")

ACTOR = "buzon-delivery"


@dataclass(frozen=True)
class DeliveryPolicy(RetryPolicy):
    claim_seconds: int = 600
    # Renders and serialises planned rows (notifier.planned). The default knows the
    # built-in templates only; the app passes one with the operator's templates and
    # attachment store.
    materializer: Materializer = field(default_factory=lambda: Materializer(Renderer(), None))


@dataclass(frozen=True)
class _Claimed:
    id: int
    ticket_id: int | None
    mail_from: str
    recipients: list[str]
    raw: bytes | None
    plan: dict[str, Any] | None
    message_id: str
    attempts: int


def deliver_due(
    sessions: sessionmaker[Session],
    transport: Transport,
    now: datetime | None = None,
    policy: DeliveryPolicy | None = None,
) -> Counter[str]:
    """One pass over the rows due at `now`: counts of sent / retry / failed / skipped.

    The transport's connection is closed at the end of the pass (a relay drops idle
    connections long before the next pass would reuse it).
    """
    policy = policy or DeliveryPolicy()
    now = now or utcnow()
    counts: Counter[str] = Counter()
    with sessions.begin() as session:
        ids = outbox.due_ids(session, now, policy.batch_size)
    try:
        for row_id in ids:
            claimed = _claim(sessions, row_id, policy, now)
            if claimed is None:
                counts["skipped"] += 1  # another job has it, or it is done
                continue
            counts[_deliver_one(sessions, transport, claimed, policy, now)] += 1
    finally:
        transport.close()
    if ids:
        log.info("delivery pass: %s", ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    return counts


def _claim(
    sessions: sessionmaker[Session], row_id: int, policy: DeliveryPolicy, now: datetime
) -> _Claimed | None:
    with sessions.begin() as session:
        if not outbox.claim(session, row_id, policy.instance, now, policy.claim_seconds):
            return None
        row = session.get(OutboxMessage, row_id, populate_existing=True)
        assert row is not None
        return _Claimed(
            row.id,
            row.ticket_id,
            row.mail_from,
            list(row.recipients),
            row.raw,
            row.plan,
            row.message_id,
            row.attempts,
        )


def _bytes_of(
    sessions: sessionmaker[Session], row: _Claimed, policy: DeliveryPolicy
) -> bytes | None:
    """The row's bytes: stored, or made from its plan now. A plan that cannot be made
    (a broken template override) fails the row, once and loudly; the plan stays, so
    `buzon outbox retry` after the fix sends it."""
    if row.raw is not None:
        return row.raw
    try:
        if row.plan is None:
            raise ValueError("the row has neither bytes nor a plan")
        return policy.materializer.raw(row.plan, row.message_id, row.recipients)
    except Exception as exc:  # noqa: BLE001 - the row records it, and the log says it
        error = f"rendering failed: {describe(exc)}"
        with sessions.begin() as session:
            outbox.mark_failed(session, row.id, policy.instance, attempts=row.attempts, error=error)
            _event(session, row, "delivery_failed", error=error[:500])
        log.error("outbox=%s not sent, %s (fix it, then: buzon outbox retry %s)",
                  row.id, error[:300], row.id)  # fmt: skip
        return None


def _deliver_one(
    sessions: sessionmaker[Session],
    transport: Transport,
    row: _Claimed,
    policy: DeliveryPolicy,
    now: datetime,
) -> str:
    raw = _bytes_of(sessions, row, policy)
    if raw is None:
        return "failed"
    attempts = row.attempts + 1
    try:
        result = transport.send(row.mail_from, row.recipients, raw)
    except TransientDeliveryError as exc:
        return _retry_or_fail(sessions, row, policy, now, attempts, str(exc), row.recipients)
    except PermanentDeliveryError as exc:
        with sessions.begin() as session:
            _bounced(session, row, {r: str(exc) for r in exc.bouncing})
            outbox.mark_failed(session, row.id, policy.instance, attempts=attempts, error=str(exc))
            _event(session, row, "delivery_failed", error=str(exc))
        log.warning("outbox=%s failed permanently: %s", row.id, str(exc)[:200])
        return "failed"
    return _record_result(sessions, row, policy, now, attempts, result)


def _record_result(
    sessions: sessionmaker[Session],
    row: _Claimed,
    policy: DeliveryPolicy,
    now: datetime,
    attempts: int,
    result: SendResult,
) -> str:
    not_delivered = result.temporary.keys() | result.permanent.keys() | result.unsupported.keys()
    delivered = [r for r in row.recipients if r not in not_delivered]
    if delivered:
        with sessions.begin() as session:
            # A relay that took the mail for an address: whatever bounced before is over.
            clear_bouncing(session, delivered)
    if result.unsupported:
        with sessions.begin() as session:
            _event(
                session,
                row,
                "delivery_refused",
                recipients=sorted(result.unsupported),
                error="; ".join(sorted(set(result.unsupported.values())))[:500],
            )
        log.warning(
            "outbox=%s not sent to %d address(es): %s",
            row.id,
            len(result.unsupported),
            next(iter(result.unsupported.values())),
        )
    if result.permanent:
        with sessions.begin() as session:
            _bounced(session, row, result.permanent)
            _event(
                session,
                row,
                "delivery_refused",
                recipients=sorted(result.permanent),
                error="; ".join(sorted(set(result.permanent.values())))[:500],
            )
    if result.temporary:
        # Only those still waiting are tried again: the others must not get it twice.
        error = "; ".join(sorted(set(result.temporary.values())))
        return _retry_or_fail(sessions, row, policy, now, attempts, error, sorted(result.temporary))
    with sessions.begin() as session:
        if delivered:
            outbox.mark_sent(session, row.id, policy.instance, now, attempts)
            return "sent"
        error = "; ".join(sorted({*result.permanent.values(), *result.unsupported.values()}))
        outbox.mark_failed(session, row.id, policy.instance, attempts=attempts, error=error)
        return "failed"


def _retry_or_fail(
    sessions: sessionmaker[Session],
    row: _Claimed,
    policy: DeliveryPolicy,
    now: datetime,
    attempts: int,
    error: str,
    recipients: list[str],
) -> str:
    with sessions.begin() as session:
        if attempts >= policy.max_attempts:
            error = f"gave up after {attempts} attempts: {error}"
            outbox.mark_failed(session, row.id, policy.instance, attempts=attempts, error=error)
            _event(session, row, "delivery_failed", error=error[:500])
            log.warning("outbox=%s gave up after %d attempts", row.id, attempts)
            return "failed"
        outbox.mark_retry(
            session,
            row.id,
            policy.instance,
            attempts=attempts,
            next_attempt_at=now + policy.backoff(attempts),
            error=error,
            recipients=recipients if recipients != row.recipients else None,
        )
    log.info("outbox=%s deferred (attempt %d): %s", row.id, attempts, error[:200])
    return "retry"


def _bounced(session: Session, row: _Claimed, refused: dict[str, str]) -> None:
    for email, reason in refused.items():
        mark_bouncing(session, email, reason)


def _event(session: Session, row: _Claimed, kind: str, **data: object) -> None:
    ticket = session.get(Ticket, row.ticket_id) if row.ticket_id is not None else None
    if ticket is not None:
        record(session, ticket, kind, ACTOR, field="outbox", new=row.id, **data)
