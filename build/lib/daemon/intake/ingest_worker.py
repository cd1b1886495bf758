"""The ingest worker: claims stored messages and hands each to the desk.

It wakes when an intake stores mail (or every `poll_interval`), claims a batch, and
has the desk turn each row into tickets. On `stop` it drains what is pending within
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
from tickets.inbox import claim_pending, claimers, release_claims
from tickets.ingest import Outcome

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
        instance: str,
        batch_size: int = 50,
        poll_interval: float = 2.0,
        stale_claim_seconds: int = 300,
        shutdown_grace: float = 30.0,
        on_outcome: Callable[[str], None] | None = None,
    ) -> None:
        self.sessions = sessions
        self.ingest = ingest
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

    def run_once(self) -> int:
        """Claim one batch and process it; returns how many rows were handled."""
        ids = claim_pending(self.sessions, self.instance, self.batch_size, self.stale_claim_seconds)
        for raw_id in ids:
            self._count(self.ingest(raw_id))
        return len(ids)

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
            handled = await self._pass(outage)
            if handled:
                continue
            waiters = [asyncio.ensure_future(self.wake.wait()), asyncio.ensure_future(stop.wait())]
            await asyncio.wait(waiters, timeout=self.poll_interval, return_when="FIRST_COMPLETED")
            for waiter in waiters:
                waiter.cancel()
        await self._drain_at_shutdown(outage)

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
        self.outcomes[outcome.state] = self.outcomes.get(outcome.state, 0) + 1
        if self.on_outcome is not None:
            self.on_outcome(outcome.state)


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
