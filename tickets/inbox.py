"""The queue of stored raw messages: what every intake writes before acknowledging,
and what the ingest worker claims.

A row's state is its place in the queue: `pending → processing (claimed_by, claimed_at)
→ processed | ignored | failed → quarantined`. Rows claimed by a worker that died go
back to `pending`, by age or at once when the claimer is known to be gone. A transient
failure (disk full, database away) puts the row back to `pending` with a `retry_at`
(`defer`): only the content's own failures (`fail`) count towards quarantine.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from tickets.errors import describe
from tickets.models import RawMessage, RawState, utcnow

SessionFactory = sessionmaker[Session]


class StoreUnavailable(Exception):
    """The raw message could not be committed: the intake must answer 'try later'."""


def accept(
    sf: SessionFactory, raw: bytes, source: str, envelope: dict[str, Any] | None = None
) -> int:
    """Commit the exact bytes and how they came; return the row id."""
    return accept_many(sf, [(raw, envelope or {})], source)[0]


def accept_many(
    sf: SessionFactory, items: Sequence[tuple[bytes, dict[str, Any]]], source: str
) -> list[int]:
    """Commit several messages in one transaction (an intake's group commit): all or none."""
    try:
        with sf.begin() as session:
            return add_raw(session, items, source)
    except Exception as exc:  # any storage failure means "not accepted"
        raise StoreUnavailable(describe(exc)) from exc


# Message-IDs are stored and looked up bounded to one header line's worth (RFC 5322).
MAX_ID_BYTES = 998


def bounded_id(message_id: str | None) -> str | None:
    """A Message-ID as stored and as looked up: the same bounded value both times, so a
    second copy of a mail with an over-long id is found. Longer than MAX_ID_BYTES, it is
    replaced by its digest (no real mail has such an id; hostile ones must not collide
    by a shared prefix)."""
    if not message_id:
        return None
    clean = message_id.replace("\x00", "")
    encoded = clean.encode("utf-8", "surrogatepass")
    if len(encoded) <= MAX_ID_BYTES:
        return clean
    # Still a well-formed msg-id (it may appear in our References), never one of ours.
    return f"sha256.{hashlib.sha256(encoded).hexdigest()}@buzon.invalid"


def add_raw(
    session: Session, items: Sequence[tuple[bytes | bytearray, dict[str, Any]]], source: str
) -> list[int]:
    """Add messages to the session's transaction (committed by the caller); their row ids.
    The bytes may be a bytearray: they are hashed and bound as they are, never copied."""
    # Here, not at the top: the read-only commands that import this module (`buzon tickets
    # list`) must not load the parsers' stack.
    from parsers.headers import header_thread_ids

    rows = [
        RawMessage(
            source=source,
            envelope=envelope,
            raw=raw,
            sha256=hashlib.sha256(raw).hexdigest(),
            size=len(raw),
            state=RawState.PENDING,
            # Known before processing, so that a worker can tell a reply whose original
            # another worker holds right now (see `tickets.ingest.original_in_flight`).
            message_id=bounded_id(header_thread_ids(raw)[0]),
        )
        for raw, envelope in items
    ]
    session.add_all(rows)
    session.flush()
    return [row.id for row in rows]


def claim_pending(sf: SessionFactory, instance: str, limit: int, stale_seconds: int) -> list[int]:
    """Claim up to `limit` pending rows (or rows whose claimer died) for this worker."""
    now = utcnow()
    stale = now - timedelta(seconds=stale_seconds)
    due = or_(RawMessage.retry_at.is_(None), RawMessage.retry_at <= now)
    with sf.begin() as session:
        ids = list(
            session.scalars(
                select(RawMessage.id)
                .where(
                    or_(
                        (RawMessage.state == RawState.PENDING) & due,
                        (RawMessage.state == RawState.PROCESSING) & (RawMessage.claimed_at < stale),
                    )
                )
                .order_by(RawMessage.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        )
        if ids:
            session.execute(
                update(RawMessage)
                .where(RawMessage.id.in_(ids))
                .values(state=RawState.PROCESSING, claimed_at=now, claimed_by=instance)
            )
        return ids


def claimers(sf: SessionFactory) -> set[str]:
    """Who holds rows in `processing` right now."""
    with sf() as session:
        holders = session.scalars(
            select(RawMessage.claimed_by).where(RawMessage.state == RawState.PROCESSING).distinct()
        )
        return {holder for holder in holders if holder is not None}


def release_claims(sf: SessionFactory, holders: Iterable[str]) -> int:
    """Give the rows of dead claimers back to the queue at once."""
    with sf.begin() as session:
        result = session.execute(
            update(RawMessage)
            .where(RawMessage.state == RawState.PROCESSING, RawMessage.claimed_by.in_(holders))
            .values(state=RawState.PENDING, claimed_at=None, claimed_by=None)
        )
        return _rowcount(result)


def release(sf: SessionFactory, raw_ids: Iterable[int], holder: str) -> int:
    """Give back rows this holder claimed but did not finish (a pass cut by an outage)."""
    with sf.begin() as session:
        result = session.execute(
            update(RawMessage)
            .where(
                RawMessage.id.in_(list(raw_ids)),
                RawMessage.state == RawState.PROCESSING,
                RawMessage.claimed_by == holder,
            )
            .values(state=RawState.PENDING, claimed_at=None, claimed_by=None)
        )
        return _rowcount(result)


@dataclass(frozen=True)
class Backoff:
    """Delay before a transiently failed message is tried again: doubles, up to `cap`."""

    base: float
    cap: float

    def delay(self, retries: int) -> float:
        return float(min(self.cap, self.base * 2 ** min(retries, 30)))


def defer(sf: SessionFactory, raw_id: int, error: str, backoff: Backoff) -> tuple[str, float]:
    """A transient failure: back to `pending`, claimable again after the backoff; the
    content's attempts are not used up. Returns the state and the delay in seconds."""
    with sf.begin() as session:
        row = session.get(RawMessage, raw_id, with_for_update=True)
        if row is None:
            raise LookupError(f"no raw message {raw_id}")
        if row.state in FINAL:
            return row.state, 0.0  # another worker finished it meanwhile
        delay = backoff.delay(row.retries)
        row.retries += 1
        row.retry_at = utcnow() + timedelta(seconds=delay)
        row.state, row.claimed_at, row.claimed_by = RawState.PENDING, None, None
        row.reason = f"retrying in {delay:g}s: {error}"[:1000]
        return row.state, delay


def fail(sf: SessionFactory, raw_id: int, error: str, max_attempts: int) -> str:
    """A failure of the content itself: `failed`, then `quarantined` after `max_attempts`.
    The raw bytes stay, for `inbound reprocess`."""
    with sf.begin() as session:
        row = session.get(RawMessage, raw_id, with_for_update=True)
        if row is None:
            raise LookupError(f"no raw message {raw_id}")
        if row.state in FINAL:
            return row.state
        row.attempts += 1
        row.state = RawState.QUARANTINED if row.attempts >= max_attempts else RawState.FAILED
        row.reason = error[:1000]
        row.processed_at = utcnow()
        row.claimed_at = row.claimed_by = None
        return row.state


FINAL = frozenset({RawState.PROCESSED, RawState.IGNORED})


def release_spam(sf: SessionFactory, raw_ids: Iterable[int]) -> int:
    """Back to the queue, marked released: ingest then skips the filters' verdict."""
    released = 0
    with sf.begin() as session:
        for row in session.scalars(select(RawMessage).where(RawMessage.id.in_(list(raw_ids)))):
            row.envelope = {**row.envelope, "released": True}
            row.state, row.reason, row.claimed_at = RawState.PENDING, None, None
            released += 1
    return released


def reset_for_reprocess(sf: SessionFactory, raw_ids: Iterable[int]) -> int:
    with sf.begin() as session:
        result = session.execute(
            update(RawMessage)
            .where(RawMessage.id.in_(list(raw_ids)))
            .values(
                state=RawState.PENDING,
                attempts=0,
                retries=0,
                retry_at=None,
                reason=None,
                claimed_at=None,
            )
        )
        return _rowcount(result)


def stored_before(
    sf: SessionFactory, digests: list[str], source: str
) -> dict[str, tuple[int, str]]:
    """Rows of the same bytes from `source` stored earlier (a refetch after a crash or a
    UIDVALIDITY reset): digest → (row id, state), the oldest row winning."""
    if not digests:
        return {}
    with sf() as session:
        rows = session.execute(
            select(RawMessage.sha256, RawMessage.id, RawMessage.state)
            .where(RawMessage.sha256.in_(digests), RawMessage.source == source)
            .order_by(RawMessage.id.desc())
        ).all()
    return {digest: (raw_id, state) for digest, raw_id, state in rows}


def record_unfetched(
    sf: SessionFactory,
    headers: bytes,
    source: str,
    envelope: dict[str, Any],
    state: str,
    reason: str,
) -> None:
    """Keep the headers of a mail whose body was not fetched (over the size limit), in
    its final state, so that ops see it in `inbound list`; once per header block."""
    digest = hashlib.sha256(headers).hexdigest()
    if stored_before(sf, [digest], source):
        return
    with sf.begin() as session:
        session.add(
            RawMessage(
                source=source,
                envelope=envelope,
                raw=headers,
                sha256=digest,
                size=len(headers),
                state=state,
                reason=reason,
                processed_at=utcnow(),
            )
        )


def _rowcount(result: object) -> int:
    """Rows an UPDATE or DELETE touched (a CursorResult; typed as Result by SQLAlchemy)."""
    return int(getattr(result, "rowcount", 0) or 0)
