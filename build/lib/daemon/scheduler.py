"""The scheduler: runs the periodic jobs (outbox delivery, the SLA scan, auto-close and
reminders, built by `daemon.wiring` from the desk and the notifier) on intervals.

APScheduler 3 (`AsyncIOScheduler`) times the jobs; the job functions are synchronous
and run in its thread pool, so the event loop that serves SMTP never waits on them.
Every job takes `now` from the Scheduler's clock, so tests run a pass at any moment
without sleeping (`run_all_once`). Correctness with several schedulers on one database
comes from the domain (locked rows, once-keys, outbox claims), not from the timing here;
the `jobs` table only tells ops when each job last ran and how it ended.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from apscheduler.executors.pool import BasePoolExecutor
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import Table
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from tickets.errors import describe
from tickets.models import Job, utcnow

log = logging.getLogger("buzon.scheduler")

JobFunction = Callable[[datetime], int]


class _PoolExecutor(BasePoolExecutor):  # type: ignore[misc]
    """APScheduler's pool executor over a pool we keep, to wait for it when stopping."""

    def __init__(self, pool: ThreadPoolExecutor) -> None:
        super().__init__(pool)


class Scheduler:
    """Runs `jobs` (stable id → (function of `now`, interval in seconds)) on intervals,
    in the order given, and records each run in the `jobs` table."""

    def __init__(
        self,
        jobs: dict[str, tuple[JobFunction, float]],
        sessions: sessionmaker[Session],
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._jobs = jobs
        self.sessions = sessions
        self.clock = clock
        self._pool: ThreadPoolExecutor | None = None

    def jobs(self) -> dict[str, tuple[JobFunction, float]]:
        return self._jobs

    # --- running -------------------------------------------------------------------------

    def run_job(self, name: str, now: datetime | None = None) -> bool:
        """Run one job; a failure is one log line and a row in `jobs`, the next run retries."""
        function, _ = self.jobs()[name]
        now = now or self.clock()
        try:
            done = function(now)
        except Exception as exc:  # noqa: BLE001 - one line, recorded, retried next run
            error = describe(exc)
            log.error("job=%s failed: %s", name, error)
            self._record(name, now, error)
            return False
        if done:
            log.info("job=%s done=%d", name, done)
        self._record(name, now, None)
        return True

    def run_all_once(self, now: datetime | None = None) -> dict[str, bool]:
        """Every job once, at `now` (tests, `buzon scheduler --once`): job id → ok."""
        now = now or self.clock()
        return {name: self.run_job(name, now) for name in self.jobs()}

    def build(self) -> AsyncIOScheduler:
        jobs = self.jobs()
        # Our own pool, so that stopping can wait for a running pass in a thread.
        self._pool = ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="buzon-job")
        scheduler = AsyncIOScheduler(executors={"default": _PoolExecutor(self._pool)}, timezone=UTC)
        for name, (_, seconds) in jobs.items():
            scheduler.add_job(
                self.run_job,
                "interval",
                seconds=seconds,
                args=[name],
                id=name,
                name=name,
                replace_existing=True,
                max_instances=1,  # a slow pass is never overlapped by the next one
                coalesce=True,  # runs missed while busy or suspended collapse into one
                next_run_time=datetime.now(UTC),  # first pass at start, not after one interval
            )
        return scheduler

    async def run(self, stop: asyncio.Event) -> None:
        """The component: run the jobs until `stop`, then let a running pass finish."""
        scheduler = self.build()
        scheduler.start()
        log.info("scheduler started jobs=%s", ",".join(self.jobs()))
        try:
            await stop.wait()
        finally:
            scheduler.shutdown(wait=False)  # waiting here would block the loop...
            if self._pool is not None:  # ...so a pass in hand is awaited from a thread
                await asyncio.to_thread(self._pool.shutdown, True)

    # --- the jobs table ------------------------------------------------------------------

    def _record(self, name: str, now: datetime, error: str | None) -> None:
        values: dict[str, Any] = {"last_run_at": now, "last_error": error}
        if error is None:
            values["last_ok_at"] = now
        try:
            with self.sessions.begin() as session:
                dialect = session.bind.dialect.name if session.bind else "sqlite"
                insert = pg_insert if dialect == "postgresql" else sqlite_insert
                table = Job.__table__
                assert isinstance(table, Table)
                statement = insert(table).values(name=name, **values)
                session.execute(
                    statement.on_conflict_do_update(index_elements=["name"], set_=values)
                )
        except SQLAlchemyError as exc:  # the database is away: the job's own line said so
            log.warning("job=%s: could not record the run: %s", name, describe(exc))
