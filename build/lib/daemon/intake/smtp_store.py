"""Durable acceptance for the SMTP/LMTP listener: group commit off the event loop,
with bounded waits, and the SQLite write gate that keeps intake and workers taking turns.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, event

from tickets.db import make_engine, make_session_factory
from tickets.errors import describe
from tickets.inbox import StoreUnavailable, accept_many


class WriteGate:
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

    def install(self, engine: Engine) -> None:
        # At checkout, before make_engine's "begin" hook takes the lock with BEGIN
        # IMMEDIATE: a connection waiting here holds nothing (the pool rolled it back).
        event.listen(engine, "checkout", self._before_checkout)
        self._engine = engine

    def uninstall(self) -> None:
        if self._engine is not None:
            event.remove(self._engine, "checkout", self._before_checkout)
            self._engine = None

    def _before_checkout(self, *_args: Any) -> None:
        with self._cond:
            target = self._announced
            self._cond.wait_for(lambda: self._finished >= target, timeout=self.max_wait)


class IntakeStore:
    """Durable acceptance with group commit, off the event loop.

    Each DATA waits in a queue; a writer takes everything waiting (up to `MAX_BATCH`
    messages or `MAX_BATCH_BYTES`) and commits it in one transaction on a thread of its
    own, then answers each session. Under load, concurrent sessions share one commit —
    on SQLite one turn at the single write lock, which the ingest worker holds for tens of
    milliseconds at a time; alone, a message is written at once, never waiting for a batch
    to fill. A failed commit fails the whole batch: every message in it is answered 451
    and none was written.

    The intake has its own engine so that its waits are bounded by `store_timeout`: a sender
    should hear 451 soon, while the workers may wait out a long lock. SQLite gets one writer
    (more would only queue on its sleeping busy handler); PostgreSQL gets a few.
    """

    MAX_BATCH = 64
    MAX_BATCH_BYTES = 16 * 1024 * 1024

    def __init__(
        self, url: str, source: str, timeout: float, gate: WriteGate | None = None
    ) -> None:
        self.engine = make_engine(url)
        self.gate = gate
        _bound_waits(self.engine, timeout)
        self.sessions = make_session_factory(self.engine)
        self.source = source
        self._writers = 1 if self.engine.dialect.name == "sqlite" else 4
        self._executor = ThreadPoolExecutor(self._writers, thread_name_prefix="buzon-intake")
        self._queue: deque[_Waiting] = deque()
        self._running = 0  # writers working the queue
        self._tasks: set[asyncio.Task[None]] = set()

    async def __call__(self, raw: bytes, envelope: dict[str, Any]) -> int:
        """Store one message; returns its row id once committed, or raises StoreUnavailable."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.append(_Waiting(raw, envelope, future))
        if self._running < self._writers:
            self._running += 1
            task = asyncio.create_task(self._write())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    async def aclose(self) -> None:
        """Finish the commits in progress (their senders may yet hear 250), then let go."""
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.to_thread(self._executor.shutdown, wait=True)
        if self.gate is not None:
            self.gate.uninstall()
        self.engine.dispose()

    async def _write(self) -> None:
        try:
            while batch := self._take():
                await self._write_batch(batch)
        finally:
            # Counted down in the same step that found the queue empty: a message queued
            # after this starts a writer of its own, none can be left waiting.
            self._running -= 1

    async def _write_batch(self, batch: list[_Waiting]) -> None:
        loop = asyncio.get_running_loop()
        items = [(w.raw, w.envelope) for w in batch]
        try:
            ids = await loop.run_in_executor(self._executor, self._commit, items)
        except Exception as exc:  # any failure of the commit means "not accepted"
            reason = str(exc) if isinstance(exc, StoreUnavailable) else describe(exc)
            for waiting in batch:
                if not waiting.future.done():
                    waiting.future.set_exception(StoreUnavailable(reason))
            return
        for waiting, raw_id in zip(batch, ids, strict=True):
            if not waiting.future.done():
                waiting.future.set_result(raw_id)

    def _take(self) -> list[_Waiting]:
        batch: list[_Waiting] = []
        size = 0
        while self._queue and len(batch) < self.MAX_BATCH:
            if batch and size + len(self._queue[0].raw) > self.MAX_BATCH_BYTES:
                break
            waiting = self._queue.popleft()
            if waiting.future.cancelled():
                continue  # the client left before we wrote it: not stored, it will retry
            batch.append(waiting)
            size += len(waiting.raw)
        return batch

    def _commit(self, items: list[tuple[bytes, dict[str, Any]]]) -> list[int]:
        turn = self.gate.intake_turn() if self.gate else contextlib.nullcontext()
        with turn:
            return accept_many(self.sessions, items, self.source)


@dataclass(frozen=True)
class _Waiting:
    raw: bytes
    envelope: dict[str, Any]
    future: asyncio.Future[int]


def _bound_waits(engine: Engine, seconds: float) -> None:
    millis = int(seconds * 1000)
    if engine.dialect.name == "sqlite":

        def on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Runs after make_engine's pragmas, so it replaces their 30 s busy timeout.
            cursor = dbapi_conn.cursor()
            cursor.execute(f"PRAGMA busy_timeout={millis}")
            cursor.close()

    else:

        def on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Outside a transaction, or a rollback would undo the SETs.
            autocommit = dbapi_conn.autocommit
            dbapi_conn.autocommit = True
            with dbapi_conn.cursor() as cursor:
                cursor.execute(f"SET lock_timeout = {millis}")
                cursor.execute(f"SET statement_timeout = {millis}")
            dbapi_conn.autocommit = autocommit

    event.listen(engine, "connect", on_connect)
