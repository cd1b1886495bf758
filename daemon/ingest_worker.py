"""The ingest worker: claims stored messages and turns them into tickets."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from tickets.ingest import AfterApply, Outcome, claim_pending, claimers, process, release_claims
from tickets.policy import MailPolicy

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
        policy: MailPolicy,
        *,
        batch_size: int = 50,
        poll_interval: float = 2.0,
        stale_claim_seconds: int = 300,
        after_apply: AfterApply | None = None,
    ) -> None:
        self.sessions = sessions
        self.policy = policy
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.stale_claim_seconds = stale_claim_seconds
        self.after_apply = after_apply
        self.wake = asyncio.Event()
        self.outcomes: dict[str, int] = {}
        self.on_outcome: Callable[[str], None] | None = None  # metrics hook, by state

    def run_once(self) -> int:
        """Claim one batch and process it; returns how many rows were handled."""
        ids = claim_pending(
            self.sessions, self.policy.instance, self.batch_size, self.stale_claim_seconds
        )
        for raw_id in ids:
            self._count(process(self.sessions, self.policy, raw_id, self.after_apply))
        return len(ids)

    def drain(self) -> int:
        """Process until nothing is pending (tests, backfills, shutdown)."""
        total = 0
        while handled := self.run_once():
            total += handled
        return total

    def recover_dead_claims(self) -> int:
        """Rows a crashed predecessor claimed would wait `stale_claim_seconds`; when we know
        the claimer is dead (our own name, or a process of this host that is gone), they
        go back to the queue now."""
        dead = {c for c in claimers(self.sessions) if _is_dead(c, self.policy.instance)}
        released = release_claims(self.sessions, dead) if dead else 0
        if released:
            log.info(
                "released %s message(s) claimed by dead worker(s) %s",
                released,
                ",".join(sorted(dead)),
            )
        return released

    async def run(self, stop: asyncio.Event) -> None:
        """Work until `stop` is set; `wake` cuts the idle wait short when mail arrives."""
        outage = False
        with contextlib.suppress(OperationalError):
            await asyncio.to_thread(self.recover_dead_claims)
        while not stop.is_set():
            # Cleared before the pass, so that mail accepted during it wakes the next one.
            self.wake.clear()
            try:
                handled = await asyncio.to_thread(self.run_once)
                if outage:
                    log.info("database reachable again; ingest resumes")
                    outage = False
            except OperationalError as exc:
                if not outage:
                    log.error("database unavailable, ingest waits: %s", str(exc).splitlines()[0])
                    outage = True
                handled = 0
            if handled:
                continue
            waiters = [asyncio.ensure_future(self.wake.wait()), asyncio.ensure_future(stop.wait())]
            await asyncio.wait(waiters, timeout=self.poll_interval, return_when="FIRST_COMPLETED")
            for waiter in waiters:
                waiter.cancel()

    def _count(self, outcome: Outcome) -> None:
        self.outcomes[outcome.state] = self.outcomes.get(outcome.state, 0) + 1
        if self.on_outcome is not None:
            self.on_outcome(outcome.state)
