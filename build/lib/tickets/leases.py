"""Named leases with expiry: one holder at a time across processes and machines.

Acquiring and renewing are the same atomic step: an UPDATE that only matches when the
row is ours or has expired, then an INSERT when no row exists yet; the row count (or
the primary key) decides, so two contenders never both win on SQLite or PostgreSQL.
A holder that dies simply stops renewing, and its lease lapses after `seconds`.

Times come from the caller's clock; instances sharing a database need synchronised
clocks (NTP) to within a small fraction of the lease length.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from tickets.models import Lease, utcnow


def acquire(
    sf: sessionmaker[Session],
    name: str,
    holder: str,
    seconds: float,
    now: datetime | None = None,
) -> bool:
    """Take or renew the lease `name` for `holder` until now + seconds; True if ours."""
    now = now or utcnow()
    expires = now + timedelta(seconds=seconds)
    with sf.begin() as session:
        taken = session.execute(
            update(Lease)
            .where(Lease.name == name, or_(Lease.holder == holder, Lease.expires_at < now))
            .values(holder=holder, expires_at=expires)
            .execution_options(synchronize_session=False)
        )
        if _rowcount(taken) == 1:
            return True
    try:
        with sf.begin() as session:
            session.add(Lease(name=name, holder=holder, expires_at=expires))
        return True
    except IntegrityError:
        return False  # someone else holds it (or inserted it a moment before us)


def release(sf: sessionmaker[Session], name: str, holder: str) -> None:
    """Give the lease up now, if it is still ours, so another instance can start at once."""
    with sf.begin() as session:
        session.execute(
            delete(Lease)
            .where(Lease.name == name, Lease.holder == holder)
            .execution_options(synchronize_session=False)
        )


def holder_of(
    sf: sessionmaker[Session], name: str, now: datetime | None = None
) -> tuple[str, datetime] | None:
    """Who holds `name` and until when; None when free or lapsed."""
    now = now or utcnow()
    with sf() as session:
        lease = session.scalar(select(Lease).where(Lease.name == name))
        if lease is None or lease.expires_at < now:
            return None
        return lease.holder, lease.expires_at


def _rowcount(result: object) -> int:
    """Rows an UPDATE or DELETE touched (a CursorResult; typed as Result by SQLAlchemy)."""
    return int(getattr(result, "rowcount", 0) or 0)
