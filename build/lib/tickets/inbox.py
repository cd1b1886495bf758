"""The queue of stored raw messages: what every intake writes before acknowledging,
and what the ingest worker claims.

A row's state is its place in the queue: `pending → processing (claimed_by, claimed_at)
→ processed | ignored | failed → quarantined`. Rows claimed by a worker that died go
back to `pending`, by age or at once when the claimer is known to be gone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
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
    rows = [
        RawMessage(
            source=source,
            envelope=envelope,
            raw=raw,
            sha256=hashlib.sha256(raw).hexdigest(),
            size=len(raw),
            state=RawState.PENDING,
        )
        for raw, envelope in items
    ]
    try:
        with sf.begin() as session:
            session.add_all(rows)
            session.flush()
            return [row.id for row in rows]
    except Exception as exc:  # any storage failure means "not accepted"
        raise StoreUnavailable(describe(exc)) from exc


def claim_pending(sf: SessionFactory, instance: str, limit: int, stale_seconds: int) -> list[int]:
    """Claim up to `limit` pending rows (or rows whose claimer died) for this worker."""
    now = utcnow()
    stale = now - timedelta(seconds=stale_seconds)
    with sf.begin() as session:
        ids = list(
            session.scalars(
                select(RawMessage.id)
                .where(
                    or_(
                        RawMessage.state == RawState.PENDING,
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


def reset_for_reprocess(sf: SessionFactory, raw_ids: Iterable[int]) -> int:
    with sf.begin() as session:
        result = session.execute(
            update(RawMessage)
            .where(RawMessage.id.in_(list(raw_ids)))
            .values(state=RawState.PENDING, attempts=0, reason=None, claimed_at=None)
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
