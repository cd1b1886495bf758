"""Durable acceptance for the SMTP/LMTP listener: group commit off the event loop,
with bounded waits, and the SQLite write gate that keeps intake and workers taking turns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from tickets.db import DbTimeouts, make_engine, make_session_factory
from tickets.errors import describe
from tickets.inbox import StoreUnavailable, add_raw

log = logging.getLogger("buzon.intake")


class _Turns:
    """Installs a gate's wait on an engine: at checkout, before make_engine's "begin"
    hook takes the lock with BEGIN IMMEDIATE, so a connection waiting there holds nothing
    (the pool rolled it back)."""

    _engine: Engine | None = None

    def install(self, engine: Engine) -> None:
        event.listen(engine, "checkout", self._before_checkout)
        self._engine = engine

    def uninstall(self) -> None:
        if self._engine is not None:
            event.remove(self._engine, "checkout", self._before_checkout)
            self._engine = None

    def _before_checkout(self, *_args: Any) -> None:
        raise NotImplementedError


class WriteGate(_Turns):
    """Turns at SQLite's write lock between the intake and the rest of the process.

    SQLite has one write lock and no queue for it: a waiting writer polls on a sleeping busy
    handler (its naps grow to 100 ms) and keeps losing to a writer that starts again at
    once, as the ingest worker does between messages — measured, intake fell to the
    worker's pace (~30 messages/s). Installed on the app's engine, the gate makes each of its
    transactions first wait for the intake batches announced before it began (at most
    `max_wait`), so the two alternate: no side starves the other.
    """

    def __init__(self, max_wait: float = 2.0) -> None:
        self.max_wait = max_wait
        self._cond = threading.Condition()
        self._announced = 0
        self._finished = 0
        self._engine: Engine | None = None

    @contextlib.contextmanager
    def intake_turn(self) -> Iterator[None]:
        with self._cond:
            self._announced += 1
        try:
            yield
        finally:
            with self._cond:
                self._finished += 1
                self._cond.notify_all()

    def _before_checkout(self, *_args: Any) -> None:
        with self._cond:
            target = self._announced
            self._cond.wait_for(lambda: self._finished >= target, timeout=self.max_wait)


class SharedWriteGate(_Turns):
    """The WriteGate across processes, for ingest in worker processes (daemon.workers),
    with intake first: while a burst is being accepted the workers stand back.

    A worker's transaction first waits until no intake batch is in progress and none has
    finished for `quiet` seconds (at most `max_wait`, so processing never stops). During
    a burst the intake commits every few milliseconds, so the workers, which hold the
    write lock for up to hundreds of milliseconds per batch, wait for the lull behind it
    instead of making each group commit wait for them (measured: ~60 ms of a 77 ms group
    commit was spent waiting for a worker's transaction). The counters live in shared
    memory that only the main process's intake writes; the workers read them, polling in
    short naps. No lock is shared, so a worker killed at any instant cannot leave the
    intake waiting on it.
    """

    NAP = 0.0005  # while an intake batch is in progress: it ends within milliseconds
    QUIET_NAP = 0.002

    def __init__(self, max_wait: float = 2.0, quiet: float = 0.05) -> None:
        self.max_wait = max_wait
        self.quiet = quiet
        # announced, finished, when the last finished (time.monotonic_ns, one clock for
        # every process); 64-bit words, each written by the intake's one writer.
        self._counts = multiprocessing.get_context("spawn").RawArray("q", 3)
        self._lock = threading.Lock()
        self._engine: Engine | None = None

    def __getstate__(self) -> dict[str, Any]:
        # To a spawned worker: the shared counters, not this process's engine or lock.
        return {"max_wait": self.max_wait, "quiet": self.quiet, "_counts": self._counts}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _lock=threading.Lock(), _engine=None)

    @contextlib.contextmanager
    def intake_turn(self) -> Iterator[None]:
        with self._lock:
            self._counts[0] += 1
        try:
            yield
        finally:
            with self._lock:
                self._counts[2] = time.monotonic_ns()
                self._counts[1] += 1

    def _before_checkout(self, *_args: Any) -> None:
        counts, quiet_ns = self._counts, int(self.quiet * 1e9)
        deadline = time.monotonic() + self.max_wait
        while time.monotonic() < deadline:
            if counts[1] < counts[0]:
                time.sleep(self.NAP)
            elif time.monotonic_ns() - counts[2] < quiet_ns:
                time.sleep(self.QUIET_NAP)
            else:
                return


Gate = WriteGate | SharedWriteGate


class IntakeStore:
    """Durable acceptance with group commit, off the event loop.

    Each DATA waits in a queue; a writer thread first takes the write lock, then takes
    everything waiting at that moment (up to `MAX_BATCH` messages or `MAX_BATCH_BYTES`)
    and commits it in one transaction, then answers each session. The mails that arrived
    while it waited for the lock (on SQLite, the ingest workers hold it for tens of
    milliseconds at a time) share that one commit; alone, a message is written at once,
    never waiting for a batch to fill. A failed commit fails the whole batch: every
    message in it is answered 451 and none was written.

    The intake has its own engine so that its waits are bounded by `store_timeout`: a sender
    should hear 451 soon, while the workers may wait out a long lock. SQLite gets one writer
    (more would only queue on its sleeping busy handler); PostgreSQL gets a few.
    """

    MAX_BATCH = 64
    MAX_BATCH_BYTES = 16 * 1024 * 1024
    # SQLite's busy handler naps up to 100 ms between tries, so the intake woke long
    # after a worker's commit (measured: ~50 ms of a 60 ms group commit was waiting).
    # It tries for LOCK_TRY at a time instead, from a loop of its own.
    LOCK_TRY = 0.002

    def __init__(
        self,
        url: str,
        source: str,
        timeout: float,
        gate: Gate | None = None,
        timeouts: DbTimeouts | None = None,
    ) -> None:
        self.timeout = timeout
        intake_timeouts = _intake_timeouts(timeouts or DbTimeouts(), timeout)
        self.sqlite = url.startswith("sqlite")
        self.lock_wait = intake_timeouts.sqlite_busy_timeout
        if self.sqlite:
            intake_timeouts = replace(intake_timeouts, sqlite_busy_timeout=self.LOCK_TRY)
        self.engine = make_engine(url, intake_timeouts)
        self.gate = gate
        self.sessions = make_session_factory(self.engine)
        self.source = source
        self._writers = 1 if self.sqlite else 4
        self._executor = ThreadPoolExecutor(self._writers, thread_name_prefix="buzon-intake")
        self._queue: deque[_Waiting] = deque()  # appended on the loop, taken by writers
        self._taking = threading.Lock()
        self._running = 0  # writers working the queue
        self._tasks: set[asyncio.Task[None]] = set()

    async def __call__(self, raw: bytes | bytearray, envelope: dict[str, Any]) -> int:
        """Store one message; returns its row id once committed, or raises StoreUnavailable
        when it was not committed within `timeout` — a hard bound whatever the database
        does (a partition can hold a statement far beyond its server-side timeout)."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.append(_Waiting(raw, envelope, future))
        if self._running < self._writers:
            self._running += 1
            task = asyncio.create_task(self._write())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        try:
            # Cancels the future on expiry: a queued message is then skipped, and one whose
            # commit lands later is stored but unanswered — the sender retries and ingest's
            # dedupe (Message-ID or content digest) keeps it to one article.
            return await asyncio.wait_for(future, self.timeout)
        except TimeoutError:
            raise StoreUnavailable(f"no commit within {self.timeout:g}s") from None

    async def aclose(self) -> None:
        """Finish the commits in progress (their senders may yet hear 250), then let go.
        Bounded: a commit stuck on a partitioned database is abandoned after `timeout`."""
        if self._tasks:
            # Every session is closed by now: a commit still running has nobody waiting.
            _, stuck = await asyncio.wait(set(self._tasks), timeout=min(self.timeout, 2.0))
            if stuck:
                log.warning("store: %d commit(s) still waiting for the database", len(stuck))
        # A writer thread hung on the network cannot be joined; it must not block exit.
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self.gate is not None:
            self.gate.uninstall()
        self.engine.dispose()

    async def _write(self) -> None:
        try:
            while self._queue:
                await self._write_batch()
        finally:
            # Counted down in the same step that found the queue empty: a message queued
            # after this starts a writer of its own, none can be left waiting.
            self._running -= 1

    async def _write_batch(self) -> None:
        loop = asyncio.get_running_loop()
        batch: list[_Waiting] = []
        try:
            ids = await loop.run_in_executor(self._executor, self._commit, batch)
        except Exception as exc:  # any failure of the commit means "not accepted"
            reason = str(exc) if isinstance(exc, StoreUnavailable) else describe(exc)
            # No lock or no connection: what waits now would fare no better.
            for waiting in batch or self._take():
                if not waiting.future.done():
                    waiting.future.set_exception(StoreUnavailable(reason))
            return
        for waiting, raw_id in zip(batch, ids, strict=True):
            if not waiting.future.done():
                waiting.future.set_result(raw_id)

    def _take(self) -> list[_Waiting]:
        """What is waiting now, on a writer thread (deque appends and pops are atomic; the
        lock keeps the size check and the pop together among several writers)."""
        batch: list[_Waiting] = []
        size = 0
        with self._taking:
            while self._queue and len(batch) < self.MAX_BATCH:
                if batch and size + len(self._queue[0].raw) > self.MAX_BATCH_BYTES:
                    break
                waiting = self._queue.popleft()
                if waiting.future.cancelled():
                    continue  # the client left before we wrote it: not stored, it will retry
                batch.append(waiting)
                size += len(waiting.raw)
        return batch

    def _commit(self, batch: list[_Waiting]) -> list[int]:
        """On a writer thread: the write lock, then what is waiting (into `batch`), one
        commit. Returns the row ids in `batch`'s order."""
        turn = self.gate.intake_turn() if self.gate else contextlib.nullcontext()
        with turn:
            try:
                with self._locked() as session:
                    batch.extend(self._take())
                    ids = add_raw(session, [(w.raw, w.envelope) for w in batch], self.source)
                    session.commit()
                    return ids
            except StoreUnavailable:
                raise
            except Exception as exc:  # any storage failure means "not accepted"
                raise StoreUnavailable(describe(exc)) from exc

    def _locked(self) -> Session:
        """A session in a transaction; on SQLite that is BEGIN IMMEDIATE, the write lock,
        tried in LOCK_TRY slices until `lock_wait` has passed."""
        deadline = time.monotonic() + self.lock_wait
        while True:
            session = self.sessions()
            try:
                session.connection()
                return session
            except OperationalError as exc:
                session.close()
                if not self.sqlite or "locked" not in str(exc.orig):
                    raise
                if time.monotonic() >= deadline:
                    raise StoreUnavailable(f"database locked for {self.lock_wait:g}s") from exc


@dataclass(frozen=True)
class _Waiting:
    raw: bytes | bytearray
    envelope: dict[str, Any]
    future: asyncio.Future[int]


def _intake_timeouts(base: DbTimeouts, store_timeout: float) -> DbTimeouts:
    """The intake's waits are bounded by store_timeout: a sender should hear 451 soon,
    while the workers may wait out a long lock. The database's own bounds end a bit
    earlier, so that a lock or a slow server fails the commit cleanly (no row) before
    the hard bound in `__call__` answers 451; that one is for a database that cannot
    even say so (a partition), where the commit may still land later."""
    seconds = store_timeout * 0.8
    return replace(
        base,
        statement_timeout=seconds,
        lock_timeout=seconds,
        sqlite_busy_timeout=seconds,
        pool_timeout=min(base.pool_timeout, seconds),
    )
