"""The scheduler: outbox delivery, the SLA scan, auto-close and reminders on intervals.

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
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from daemon.app import App
from notifier.delivery import deliver_due
from notifier.notify import Notifier
from notifier.sla_mail import StaffRouting, notify_sla
from notifier.transports import Transport
from tickets.changes import Change
from tickets.housekeeping import close_resolved, tickets_to_remind
from tickets.models import Job, Ticket, utcnow
from tickets.sla import SlaChange, check_ticket, due_ticket_ids, fired_keys, refresh

log = logging.getLogger("buzon.scheduler")

BATCH = 500  # tickets per transaction: short transactions, bounded memory
MAX_BATCHES = 1000  # a guard: a pass never loops forever, the next run goes on
JobFunction = Callable[[datetime], int]


class _PoolExecutor(BasePoolExecutor):  # type: ignore[misc]
    """APScheduler's pool executor over a pool we keep, to wait for it when stopping."""

    def __init__(self, pool: ThreadPoolExecutor) -> None:
        super().__init__(pool)


class Scheduler:
    def __init__(
        self,
        app: App,
        clock: Callable[[], datetime] = utcnow,
        *,
        transport: Callable[[], Transport] | None = None,
        batch: int = BATCH,
    ) -> None:
        self.app = app
        self.clock = clock
        self.transport = transport or app.transport
        self.batch = batch
        self._pool: ThreadPoolExecutor | None = None

    # --- the jobs ------------------------------------------------------------------------

    def jobs(self) -> dict[str, tuple[JobFunction, float]]:
        """Stable id → (function, interval in seconds). Outbox last: a pass delivers the
        mail the other jobs have just queued."""
        sla = self.app.settings.sla
        return {
            "sla_scan": (self.scan_sla, sla.scan_interval_seconds),
            "auto_close": (self.auto_close, sla.scan_interval_seconds),
            "reminders": (self.remind, sla.scan_interval_seconds),
            "outbox": (self.deliver, sla.outbox_interval_seconds),
        }

    def deliver(self, now: datetime) -> int:
        counts = deliver_due(self.app.sessions, self.transport(), now, self.app.delivery_policy)
        return sum(counts.values())

    def scan_sla(self, now: datetime) -> int:
        """Act on every ticket whose SLA check is due, mail included, batch by batch."""
        total = 0
        for _ in range(MAX_BATCHES):
            with self.app.sessions.begin() as session:
                ids = due_ticket_ids(session, now, self.batch)
                changes: list[SlaChange] = []
                for ticket_id in ids:
                    ticket = session.get(Ticket, ticket_id)
                    if ticket is not None:
                        changes += check_ticket(session, ticket, self.app.sla_policy, now)
                notify_sla(
                    session,
                    changes,
                    self.app.notifier.settings,
                    self.app.notifier.renderer,
                    self.routing,
                    now,
                )
            total += len(changes)
            if len(ids) < self.batch:  # fewer than asked: nothing else is due (or locked)
                break
        return total

    def auto_close(self, now: datetime) -> int:
        days = self.app.settings.sla.auto_close_after_days
        total = 0
        for _ in range(MAX_BATCHES):
            with self.app.sessions.begin() as session:
                changes = close_resolved(session, now, days, self.batch)
                self._after_change(session, changes, now)
            total += len(changes)
            if len(changes) < self.batch:
                break
        return total

    def remind(self, now: datetime) -> int:
        days = self.app.settings.sla.reminder_after_days
        total = 0
        for _ in range(MAX_BATCHES):
            with self.app.sessions.begin() as session:
                tickets = tickets_to_remind(session, now, days, self.batch)
                notifier = self._notifier(now)
                for ticket in tickets:
                    notifier.remind(session, ticket)
            total += len(tickets)
            if len(tickets) < self.batch:
                break
        return total

    @property
    def routing(self) -> StaffRouting:
        s = self.app.settings
        return StaffRouting(
            tier1=tuple(s.sla.tier1_addresses),
            tier2=tuple(s.sla.tier2_addresses),
            teams={team: tuple(a) for team, a in s.tickets.team_addresses.items()},
            language=s.default_language,
            timezone=s.sla.timezone,
            own_addresses=s.own_addresses,
        )

    def _notifier(self, now: datetime) -> Notifier:
        """The app's notifier, dated by the scheduler's clock rather than the wall clock."""
        base = self.app.notifier
        return Notifier(base.settings, base.renderer, clock=lambda: now)

    def _after_change(self, session: Session, changes: list[Change], now: datetime) -> None:
        """What App.after_apply does, at the scheduler's `now`: SLA clocks, then mail."""
        for ticket_id in dict.fromkeys(c.ticket_id for c in changes):
            ticket = session.get(Ticket, ticket_id)
            if ticket is not None:
                refresh(ticket, self.app.sla_policy, now, fired_keys(session, ticket_id))
        self._notifier(now).notify(session, changes)

    # --- running -------------------------------------------------------------------------

    def run_job(self, name: str, now: datetime | None = None) -> bool:
        """Run one job; a failure is one log line and a row in `jobs`, the next run retries."""
        function, _ = self.jobs()[name]
        now = now or self.clock()
        try:
            done = function(now)
        except Exception as exc:  # noqa: BLE001 - one line, recorded, retried next run
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
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
            with self.app.sessions.begin() as session:
                dialect = session.bind.dialect.name if session.bind else "sqlite"
                insert = pg_insert if dialect == "postgresql" else sqlite_insert
                statement = insert(Job.__table__).values(name=name, **values)
                session.execute(
                    statement.on_conflict_do_update(index_elements=["name"], set_=values)
                )
        except SQLAlchemyError as exc:  # the database is away: the job's own line said so
            log.warning("job=%s: could not record the run: %s", name, str(exc).splitlines()[0])
