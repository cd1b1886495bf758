"""The webhook delivery job: claim due deliveries, POST their stored body, record the result.

Like the outbox's delivery job: a row is claimed by a conditional UPDATE before it is
sent, so two instances never send one row at the same time; the claim outlives the HTTP
timeout, and one left by a killed process expires, so the row is sent again (at least
once; the idempotency key lets the receiver drop the repeat). A 2xx answer is success;
any other answer, a timeout or a connection error is retried with exponential backoff
until `max_attempts`, then the row is dead (kept, listed, retried by an operator).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session, sessionmaker

from notifier.retry import RetryPolicy
from tickets import webhooks
from tickets.webhooks import Claimed

if TYPE_CHECKING:  # httpx is imported by a pass that sends: a CLI command never waits on it
    import httpx

log = logging.getLogger("buzon.webhooks")


@dataclass(frozen=True)
class Receiver:
    """Where a hook's events go, and the secret their signature is made with."""

    url: str
    secret: str


@dataclass(frozen=True)
class WebhookPolicy(RetryPolicy):
    retry_base_seconds: float = 5.0
    retry_max_seconds: float = 3600.0
    timeout: float = 10.0

    @property
    def claim_seconds(self) -> float:
        # httpx's timeout bounds each phase (connect, write, read) on its own, so a request
        # may last a few timeouts; the claim must not expire while it is in flight (if it
        # did, another instance could send the row too: harmless, the key tells).
        return 3 * self.timeout + 10


def sign(secret: str, body: bytes) -> str:
    """The X-Buzon-Signature value: HMAC-SHA256 of the exact body under the hook's secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def deliver_webhooks(
    sessions: sessionmaker[Session],
    receivers: Mapping[str, Receiver],
    now: datetime,
    policy: WebhookPolicy,
    client: httpx.Client | None = None,
) -> Counter[str]:
    """One pass over the deliveries due at `now`: counts of sent / retry / dead / skipped."""
    counts: Counter[str] = Counter()
    with sessions.begin() as session:
        ids = webhooks.due_ids(session, now, policy.batch_size)
    if not ids:
        return counts
    import httpx

    own_client = client is None
    client = client or httpx.Client(timeout=policy.timeout, follow_redirects=False)
    try:
        for row_id in ids:
            with sessions.begin() as session:
                row = webhooks.claim(session, row_id, policy.instance, now, policy.claim_seconds)
            if row is None:
                counts["skipped"] += 1  # another job has it, or it is done
                continue
            counts[_deliver_one(sessions, client, receivers.get(row.hook), row, policy, now)] += 1
    finally:
        if own_client:
            client.close()
    log.info("webhooks pass: %s", ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    return counts


def _deliver_one(
    sessions: sessionmaker[Session],
    client: httpx.Client,
    receiver: Receiver | None,
    row: Claimed,
    policy: WebhookPolicy,
    now: datetime,
) -> str:
    if receiver is None:
        gone = f"hook {row.hook!r} is no longer configured"
        return _failed(sessions, row, policy, now, gone, give_up=True)
    error = post(client, receiver, row)
    if error is None:
        with sessions.begin() as session:
            webhooks.mark_sent(session, row, policy.instance, now)
        return "sent"
    last = row.attempts + 1 >= policy.max_attempts
    return _failed(sessions, row, policy, now, error, give_up=last)


def post(client: httpx.Client, receiver: Receiver, row: Claimed) -> str | None:
    """POST the stored body once; None on a 2xx answer, else why it failed."""
    import httpx

    body = row.payload.encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "buzon-webhooks",
        "X-Buzon-Event": row.event,
        "X-Buzon-Delivery": str(row.id),
        "X-Buzon-Idempotency-Key": row.idempotency_key,
        "X-Buzon-Signature": sign(receiver.secret, body),
    }
    try:
        response = client.post(receiver.url, content=body, headers=headers)
    except httpx.TimeoutException as exc:
        return f"timeout: {type(exc).__name__}"
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"
    if response.is_success:
        return None
    return f"HTTP {response.status_code} {response.reason_phrase}"


def _failed(
    sessions: sessionmaker[Session],
    row: Claimed,
    policy: WebhookPolicy,
    now: datetime,
    error: str,
    *,
    give_up: bool,
) -> str:
    attempts = row.attempts + 1
    retry_at = None if give_up else now + policy.backoff(attempts)
    with sessions.begin() as session:
        webhooks.mark_failed(session, row, policy.instance, error, retry_at)
    # One line, never the body: it may carry a customer's text.
    if retry_at is None:
        log.warning(
            "webhook delivery=%s hook=%s dead after %d attempt(s): %s",
            row.id, row.hook, attempts, error[:200],
        )  # fmt: skip
        return "dead"
    log.info(
        "webhook delivery=%s hook=%s attempt %d failed, retry at %s: %s",
        row.id, row.hook, attempts, retry_at.isoformat(), error[:200],
    )  # fmt: skip
    return "retry"
