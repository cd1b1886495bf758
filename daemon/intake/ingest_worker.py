"""The ingest worker: claims stored messages and hands them to the desk in batches.

It wakes when an intake stores mail (or every `poll_interval`), claims a batch, and
has the desk turn the batch into tickets in one transaction (`Desk.ingest_batch`: each
mail in a savepoint, one bad mail fails alone). On `stop` it drains what is pending within
`shutdown_grace` (waiting while an upstream intake still finishes its transactions);
the rest waits in the store for the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from tickets.errors import describe
from tickets.inbox import claim_pending, claimers, fail, release, release_claims
from tickets.ingest import Outcome, is_transient

log = logging.getLogger("buzon.ingest")


def _is_dead(claimer: str, me: str) -> bool:
    if claimer == me:
        return True  # an instance name is unique: a claim under it before we ran is stale
    host, _, pid = claimer.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine's worker: its claims expire by age
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class IngestWorker:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        ingest: Callable[[int], Outcome],
        *,
        ingest_batch: Callable[[list[int]], list[Outcome]] | None = None,
        instance: str,
        batch_size: int = 50,
        poll_interval: float = 2.0,
        stale_claim_seconds: int = 300,
        shutdown_grace: float = 30.0,
        on_outcome: Callable[[str], None] | None = None,
    ) -> None:
        self.sessions = sessions
        self.ingest = ingest
        self.ingest_batch = ingest_batch  # None: one transaction per mail
        self.instance = instance
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.stale_claim_seconds = stale_claim_seconds
        self.shutdown_grace = shutdown_grace
        self.on_outcome = on_outcome  # metrics: the state each message ended in
        self.wake = asyncio.Event()
        self.outcomes: dict[str, int] = {}
        # While this says True at shutdown, an intake may still store mail: keep draining.
        self.upstream_open: Callable[[], bool] = lambda: False
        # Heartbeat: when a message was last finished or a pass last ended without a
        # database outage. A hung pass or a worker that cannot claim leaves it ageing.
        self.last_progress = time.monotonic()
        self._abandoned = False  # a pass hung at shutdown was left behind

    def progress_age(self) -> float:
        """Seconds since the worker last made progress (health and metrics read this)."""
        return time.monotonic() - self.last_progress

    # Content failures before quarantine, for a failure that escaped the desk (the wiring
    # sets it from ingest.max_attempts).
    max_attempts: int = 3
    # Rows of a pass cut short by an outage: given back to the queue by the next pass.
    _unfinished: tuple[int, ...] = ()

    def run_once(self) -> int:
        """Claim one batch and process it; returns how many rows were handled.

        One mail's failure, whatever it is, ends that mail (`failed`, later
        `quarantined`), never the worker. Only an outage of the store ends the pass, as
        OperationalError (the caller waits it out); the rest of the batch stays claimed
        by us until the next pass gives it back, so no mail waits for a stale claim.
        """
        if self._unfinished:
            release(self.sessions, self._unfinished, self.instance)
            self._unfinished = ()
        ids = claim_pending(self.sessions, self.instance, self.batch_size, self.stale_claim_seconds)
        done = self._ingest_together(ids) if self.ingest_batch is not None and ids else 0
        for n, raw_id in enumerate(ids[done:], done):
            self._unfinished = tuple(ids[n:])
            self._count(self._ingest_one(raw_id))
        self._unfinished = ()
        return len(ids)

    def _ingest_together(self, ids: list[int]) -> int:
        """The batch in one transaction; how many rows it finished (all, or none when it
        failed in a way of its own: then the rows go one by one)."""
        assert self.ingest_batch is not None
        self._unfinished = tuple(ids)
        try:
            outcomes = self.ingest_batch(ids)
        except OperationalError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug of the batch path, not the mail's
            if is_transient(exc):
                raise _outage(exc) from exc
            log.error("batch of %d failed, one by one instead: %s", len(ids), describe(exc, 500))
            return 0
        for outcome in outcomes:
            self._count(outcome)
        return len(ids)

    def _ingest_one(self, raw_id: int) -> Outcome:
        try:
            return self.ingest(raw_id)
        except OperationalError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug or a refusal: this mail's, not ours
            if is_transient(exc):
                raise _outage(exc) from exc
            error = describe(exc, 500)  # one line, never the mail (no SQL parameters)
            log.error("ingest failed raw=%s error=%s", raw_id, error)
            try:
                state = fail(self.sessions, raw_id, error, self.max_attempts)
            except OperationalError:
                raise
            except Exception as store_exc:  # noqa: BLE001 - the store cannot record it
                raise _outage(store_exc) from store_exc
            return Outcome(raw_id, state, reason=error)

    def drain(self) -> int:
        """Process until nothing is pending (tests, backfills)."""
        total = 0
        while handled := self.run_once():
            total += handled
        return total

    def recover_dead_claims(self) -> int:
        """Rows a crashed predecessor claimed would wait `stale_claim_seconds`; when we know
        the claimer is dead (our own name, or a process of this host that is gone), they
        go back to the queue now."""
        dead = {c for c in claimers(self.sessions) if _is_dead(c, self.instance)}
        released = release_claims(self.sessions, dead) if dead else 0
        if released:
            log.info(
                "released %s message(s) claimed by dead worker(s) %s",
                released,
                ",".join(sorted(dead)),
            )
        return released

    async def run(self, stop: asyncio.Event) -> None:
        """Work until `stop` is set; `wake` cuts the idle wait short when mail arrives.
        Then drain what was accepted, within the grace."""
        with contextlib.suppress(OperationalError):
            await asyncio.to_thread(self.recover_dead_claims)
        outage = _Outage()
        while not stop.is_set():
            # Cleared before the pass, so that mail accepted during it wakes the next one.
            self.wake.clear()
            handled = await self._pass_or_stop(outage, stop)
            if not outage.active:
                self.last_progress = time.monotonic()
            if handled:
                continue
            waiters = [asyncio.ensure_future(self.wake.wait()), asyncio.ensure_future(stop.wait())]
            await asyncio.wait(waiters, timeout=self.poll_interval, return_when="FIRST_COMPLETED")
            for waiter in waiters:
                waiter.cancel()
        if self._abandoned:
            return  # the store hangs: draining would hang the same way
        try:
            await asyncio.wait_for(self._drain_at_shutdown(outage), self.shutdown_grace + 2.0)
        except TimeoutError:
            log.error("shutdown: a pass is stuck on the database; leaving it claimed")

    async def _pass_or_stop(self, outage: _Outage, stop: asyncio.Event) -> int:
        """One pass; if `stop` comes meanwhile, the pass gets the grace to end. A pass hung
        on a partitioned store cannot be interrupted: it is abandoned, and its claims go
        back to the queue at the next start (recover_dead_claims)."""
        task = asyncio.ensure_future(self._pass(outage))
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not task.done():
            await asyncio.wait({task}, timeout=self.shutdown_grace)
        if not task.done():
            log.error("shutdown: a pass is stuck on the database; leaving it claimed")
            self._abandoned = True
            return 0
        return task.result()

    async def _pass(self, outage: _Outage) -> int:
        try:
            handled = await asyncio.to_thread(self.run_once)
        except OperationalError as exc:
            outage.started(exc)
            return 0
        outage.ended()
        return handled

    async def _drain_at_shutdown(self, outage: _Outage) -> None:
        deadline = time.monotonic() + max(self.shutdown_grace, 1.0)
        total = 0
        while time.monotonic() < deadline:
            handled = await self._pass(outage)
            total += handled
            if outage.active:
                break
            if not handled:
                if not self.upstream_open():
                    break
                await asyncio.sleep(0.05)
        log.info("processed %d message(s) at shutdown", total)

    def _count(self, outcome: Outcome) -> None:
        self.last_progress = time.monotonic()
        self.outcomes[outcome.state] = self.outcomes.get(outcome.state, 0) + 1
        if self.on_outcome is not None:
            self.on_outcome(outcome.state)


def _outage(exc: BaseException) -> OperationalError:
    """A store failure of another class, in the form the run loop waits out."""
    return OperationalError(None, None, exc)


class _Outage:
    """One log line when the database goes away and one when it is back."""

    def __init__(self) -> None:
        self.active = False

    def started(self, exc: BaseException) -> None:
        if not self.active:
            log.error("database unavailable, ingest waits: %s", describe(exc))
            self.active = True

    def ended(self) -> None:
        if self.active:
            log.info("database reachable again; ingest resumes")
            self.active = False
