"""SLA scan cost with many open tickets: does it grow with the due tickets or with all?

Fills a database with N open tickets (default 1,000,000), of which D are due, and times
one scan for D = 100 and D = 10,000. The baseline, measured in the same run, is a scan
that walks every open ticket (the query a store without `sla_next_check_at` must run).

    .venv/bin/python bench/sla_scan.py [--tickets 1000000] [--db sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import insert, select, text, update  # noqa: E402

from tickets.calendar import BusinessCalendar  # noqa: E402
from tickets.db import make_engine, make_session_factory, upgrade  # noqa: E402
from tickets.models import Ticket  # noqa: E402
from tickets.sla import SlaPolicy, refresh, scan  # noqa: E402

NOW = datetime(2025, 3, 10, 18, 0, tzinfo=UTC)
POLICY = SlaPolicy(calendar=BusinessCalendar("America/Mexico_City", country="MX"))
PG_URL = os.environ.get("BUZON_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def fill(sessions, total: int) -> None:  # type: ignore[no-untyped-def]
    created = NOW - timedelta(hours=1)
    future = NOW + timedelta(days=30)
    row = {
        "subject": "bench",
        "status": "in_progress",
        "level": 2,
        "priority": "P3",
        "category": "general",
        "requester": "c@clinica.example",
        "language": "es",
        "created_at": created,
        "updated_at": created,
        "sla_paused_seconds": 0,
        "first_response_due_at": future,
        "resolution_due_at": future,
        "sla_next_check_at": future,
    }
    batch = 20_000
    with sessions.begin() as session:
        for start in range(0, total, batch):
            session.execute(insert(Ticket), [row] * min(batch, total - start))


def make_due(sessions, policy: SlaPolicy, count: int) -> None:  # type: ignore[no-untyped-def]
    """Turn `count` tickets into really due ones (created a week ago, clocks refreshed)."""
    with sessions.begin() as session:
        ids = list(session.scalars(select(Ticket.id).order_by(Ticket.id.desc()).limit(count)))
        session.execute(
            update(Ticket)
            .where(Ticket.id.in_(ids))
            .values(created_at=NOW - timedelta(days=7), sla_next_check_at=None)
        )
        for ticket in session.scalars(select(Ticket).where(Ticket.id.in_(ids))):
            refresh(ticket, policy, NOW - timedelta(days=7))


def timed_scan(sessions) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    """Scan as the scheduler does: batches of 500 due tickets, one transaction each."""
    start = time.perf_counter()
    total = 0
    while True:
        with sessions.begin() as session:
            found = scan(session, POLICY, NOW, limit=500)
        total += len(found.changes)
        if found.checked < 500:
            return time.perf_counter() - start, total


def timed_walk(sessions) -> float:  # type: ignore[no-untyped-def]
    """Baseline: visit every open ticket and test its due times."""
    start = time.perf_counter()
    with sessions() as session:
        due = 0
        for first, resolution in session.execute(
            select(Ticket.first_response_due_at, Ticket.resolution_due_at).where(
                Ticket.status.in_(["new", "in_progress"])
            )
        ):
            if (first and first <= NOW) or (resolution and resolution <= NOW):
                due += 1
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tickets", type=int, default=1_000_000)
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="buzon-sla-bench-")
    if args.db == "sqlite":
        url = f"sqlite:///{tmp}/bench.db"
    else:
        schema = f"bench_{os.getpid()}"
        admin = make_engine(PG_URL)
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    engine = make_engine(url)
    upgrade(engine)
    sessions = make_session_factory(engine)
    policy = POLICY
    started = time.perf_counter()
    fill(sessions, args.tickets)
    print(
        f"filled {args.tickets:,} open tickets in {time.perf_counter() - started:.1f} s ({args.db})"
    )
    walk = timed_walk(sessions)
    print(f"baseline: walking every open ticket: {walk:.3f} s")
    for due in (100, 10_000):
        make_due(sessions, policy, due)
        seconds, changes = timed_scan(sessions)
        print(
            f"scan with {due:>6,} due tickets: {seconds:.3f} s  ({changes} SLA changes; "
            f"{seconds / walk:.2f}x the walk; {seconds / due * 1000:.2f} ms per due ticket)"
        )
        empty, _ = timed_scan(sessions)
        print(f"  next scan, nothing due:           {empty:.4f} s")
    if args.db == "postgresql":
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


if __name__ == "__main__":
    main()
