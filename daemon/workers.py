"""Ingest in worker processes: the main process takes mail in, the workers process it.

With `ingest.processes` above 1, `buzon run` (and `buzon smtp`/`buzon imap`) start that
many worker processes; the main process keeps the SMTP listener, the IMAP pollers, the
scheduler and HTTP, so parsing and the write transactions of processing never take the
event loop's core from intake (an IMAP poller stores its batches and hands them
over: `hand_over`, `on_progress`). Each worker builds its own App and engine from the same
Settings and runs the ordinary `IngestWorker` loop; rows are shared out by the store's
claims, exactly as between several `buzon` instances on one database.

Why `multiprocessing` rather than child `buzon` commands: the Settings object goes to the
child as it is (command-line overrides included, no config file re-read that could
differ). Why the forkserver context: a fork server, started once with the worker's
modules imported (`preload`), forks each worker from that clean point, so a worker is
ready in a fraction of a second instead of importing everything again (seconds on a busy
machine, for every start and restart); like spawn, and unlike a fork of this process, the
child inherits none of the parent's threads, engine or sockets.

Parent and worker talk over one socketpair, in single bytes one way and lines the other:

    parent → worker   w  mail was accepted: wake now (push, not polling)
                      s  stop: finish the pass in hand, then drain
                      c  intake is closed: nothing more will arrive, drain and exit
    worker → parent   o <state>   one message processed (the parent's metrics count it)
                      a <seconds> heartbeat: the worker's progress age (health, watchdog)

A worker that dies is started again after a backoff; the rows it had claimed go back
to the queue when its successor starts (`IngestWorker.recover_dead_claims`: its pid is
gone, or its instance name is its own). A worker also dies with the main process
(a thread waits on the main process's pidfd on Linux, and end of file on its socket
elsewhere): none is left orphaned, whatever kills the parent. The fork server exits once
the main process and its workers are gone (multiprocessing's "alive" pipe).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import multiprocessing.forkserver
import multiprocessing.resource_tracker
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import Any

from daemon.config import ConfigError
from daemon.intake.ingest_worker import IngestWorker
from daemon.intake.smtp_store import SharedWriteGate
from tickets.errors import describe

log = logging.getLogger("buzon.workers")

EX_CONFIG = 78  # a worker that fails on the configuration: restarting cannot help
WAKE, STOP, CLOSED = b"w", b"s", b"c"
HEARTBEAT_SECONDS = 1.0
BACKOFF_MIN, BACKOFF_MAX = 0.5, 30.0
STEADY_SECONDS = 30.0  # a worker that ran this long resets its backoff
KILL_GRACE = 3.0  # a worker not yet given its drain: SIGTERM, then this long before SIGKILL
# What the pool runs in each child: target(*args, index, channel); it exits
# with the worker's code (EX_CONFIG: a configuration error, not restarted).
Target = Callable[..., None]


@dataclass
class _Worker:
    index: int
    process: BaseProcess | None = None
    channel: socket.socket | None = None
    buffer: bytes = b""
    age: float = 0.0  # progress age last reported
    age_at: float = field(default_factory=time.monotonic)  # when it was reported
    started_at: float = 0.0
    failures: int = 0  # consecutive short lives
    restart_at: float | None = None  # set while it waits for its backoff
    ready: bool = False  # it has sent its first heartbeat: its loop runs
    last_exit: int | None = None


class WorkerPool:
    """The supervising side: starts, watches, wakes, restarts and stops the workers."""

    def __init__(
        self,
        target: Target,
        args: tuple[Any, ...],
        count: int,
        *,
        drain_seconds: float,
        on_outcome: Callable[[str], None] | None = None,
        gate: SharedWriteGate | None = None,
        finish: Callable[[], int] | None = None,
        preload: Sequence[str] = (),
    ) -> None:
        self.target = target
        self.args = args  # the child gets (*args, index, channel)
        self.workers = [_Worker(i) for i in range(count)]
        self.drain_seconds = drain_seconds
        self.on_outcome = on_outcome
        self.gate = gate  # SQLite: the intake's turns, shared with the workers (in `args`)
        # Run in a thread once the workers are gone: processes what they left pending (a
        # worker still starting at the stop, one ended at the deadline) within the bound.
        self.finish = finish
        # While this says True at shutdown, an intake may still store mail: the workers
        # keep draining (the wiring points it at the listener, as for the in-process worker).
        self.upstream_open: Callable[[], bool] = lambda: False
        self._context = multiprocessing.get_context("forkserver")
        # One fork server per process: the first pool's modules are the ones it imports.
        self._context.set_forkserver_preload(list(preload))
        self._changed = asyncio.Event()
        self.wake = _Wake(self)  # .set(), as the in-process worker's wake event
        self._wake_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        # Told (on the event loop) whenever a worker finished a message: an IMAP poller
        # waiting to settle handed-over mail on its server.
        self.on_progress: list[Callable[[], None]] = []

    # --- what the rest of the process calls ----------------------------------------------

    def wake_workers(self) -> None:
        """After an accept: the workers wake at once. Coalesced: one byte per worker per
        turn of the event loop, however many mails that turn accepted."""
        if self._wake_scheduled or self._loop is None:
            return
        self._wake_scheduled = True
        self._loop.call_soon(self._send_wakes)

    def hand_over(self) -> bool:
        """From another thread (an IMAP poller's): wake the workers for mail just stored;
        True when one of them runs its loop already (else the caller processes itself)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: stopping
                loop.call_soon_threadsafe(self.wake_workers)
        return any(w.ready and w.process is not None for w in self.workers)

    def progress_age(self) -> float:
        """The oldest progress among the workers (a dead one keeps ageing)."""
        now = time.monotonic()
        return max((w.age + now - w.age_at for w in self.workers), default=0.0)

    def ready(self) -> tuple[bool, str]:
        alive = sum(1 for w in self.workers if _alive(w))
        if alive == len(self.workers):
            return True, f"{alive} worker process(es)"
        down = [f"{w.index} (exit {w.last_exit})" for w in self.workers if not _alive(w)]
        return False, f"{alive}/{len(self.workers)} worker processes; restarting {', '.join(down)}"

    def pids(self) -> list[int]:
        return [w.process.pid for w in self.workers if w.process and w.process.pid]

    def start_server(self) -> None:
        """Start the fork server now (it imports `preload` meanwhile), not at the first
        worker's start; a no-op once it runs."""
        with _sigterm_held():
            multiprocessing.forkserver.ensure_running()

    # --- the component --------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            # The first starts wait for the fork server's imports (seconds on a busy
            # machine): in a thread, while the event loop serves intake. Not abandoned if
            # this is cancelled meanwhile: what it starts is ended below.
            spawning = asyncio.ensure_future(asyncio.to_thread(self._spawn_all))
            try:
                await asyncio.shield(spawning)
            finally:
                await spawning
            for worker in self.workers:
                self._attach(worker)
            log.info("started %d ingest worker process(es) pids=%s", len(self.workers),
                     ",".join(map(str, self.pids())))  # fmt: skip
            await self._supervise(stop)
            # One bound for the whole stop, as the in-process worker's: the drain's, plus
            # the margin of a pass that ends late (within the supervisor's stop timeout).
            end = time.monotonic() + self.drain_seconds + 2.0
            await self._stop_workers(end)
            # Past the drain's bound a worker still running is stuck (on a store that does
            # not answer): its own SIGTERM handler would only ask it to stop, as STOP did.
            # Killed now; its transaction rolls back and its claims go back to the queue.
            self._kill_all(grace=0.0)
            await self._finish(max(1.0, end - time.monotonic()))
        finally:
            self._kill_all()

    async def _supervise(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._changed.clear()
            for worker in self.workers:
                self._check(worker)
            stopping = asyncio.ensure_future(stop.wait())
            changed = asyncio.ensure_future(self._changed.wait())
            await asyncio.wait({stopping, changed}, timeout=0.5, return_when="FIRST_COMPLETED")
            stopping.cancel()
            changed.cancel()

    def _check(self, worker: _Worker) -> None:
        """Notice a death, and start again once its backoff has passed."""
        now = time.monotonic()
        if worker.restart_at is not None:
            if now >= worker.restart_at:
                worker.restart_at = None
                self._start(worker)
                log.info("worker=%s restarted pid=%s", worker.index, _pid(worker))
            return
        process = worker.process
        if process is None or process.is_alive():
            return
        code, pid = process.exitcode, process.pid
        worker.last_exit = code
        self._forget(worker)
        if code == EX_CONFIG:
            raise ConfigError(f"ingest worker process {worker.index}: configuration error")
        lived = now - worker.started_at
        worker.failures = 0 if lived >= STEADY_SECONDS else worker.failures + 1
        delay = min(BACKOFF_MAX, BACKOFF_MIN * 2 ** max(0, worker.failures - 1))
        worker.restart_at = now + delay
        log.error("worker=%s pid=%s died exit=%s after %.1fs; restarting in %.1fs",
                  worker.index, pid, code, lived, delay)  # fmt: skip

    def _start(self, worker: _Worker) -> None:
        self._spawn(worker)
        self._attach(worker)

    def _spawn_all(self) -> None:
        for worker in self.workers:
            self._spawn(worker)

    def _spawn(self, worker: _Worker) -> None:
        """Start the worker's process (blocks until the fork server has forked it)."""
        ours, theirs = socket.socketpair()
        process = self._context.Process(
            target=_child,
            args=(self.target, os.getpid(), *self.args, worker.index, theirs),
            name=f"buzon-ingest-{worker.index}",
            daemon=False,  # it drains at shutdown; we stop and reap it ourselves
        )
        with _sigterm_held():  # (re)starts the fork server if it is not running
            process.start()
        theirs.close()  # the child holds its own copy: our end sees EOF when it exits
        ours.setblocking(False)
        worker.process, worker.channel, worker.buffer = process, ours, b""
        worker.started_at = worker.age_at = time.monotonic()
        worker.age, worker.ready = 0.0, False

    def _attach(self, worker: _Worker) -> None:
        assert self._loop is not None and worker.channel is not None
        self._loop.add_reader(worker.channel.fileno(), self._read, worker)

    def _read(self, worker: _Worker) -> None:
        assert worker.channel is not None
        try:
            data = worker.channel.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the worker is gone (or going): the supervision loop reaps it
            self._close_channel(worker)
            self._changed.set()
            return
        lines = (worker.buffer + data).split(b"\n")
        worker.buffer = lines.pop()
        for line in lines:
            self._message(worker, line)
        if any(line.startswith(b"o ") for line in lines):
            for listener in self.on_progress:
                listener()

    def _message(self, worker: _Worker, line: bytes) -> None:
        kind, _, value = line.decode("ascii", "replace").partition(" ")
        if kind == "o" and self.on_outcome is not None:
            self.on_outcome(value)
        elif kind == "a":
            with contextlib.suppress(ValueError):
                worker.age, worker.age_at = float(value), time.monotonic()
                worker.ready = True

    def _send_wakes(self) -> None:
        self._wake_scheduled = False
        for worker in self.workers:
            _send(worker, WAKE)

    async def _stop_workers(self, end: float) -> None:
        """Stop: the workers finish their pass; once intake is closed they drain what it
        stored (within the drain's bound) and exit."""
        for worker in self.workers:
            worker.restart_at = None  # a worker waiting for its restart stays down
            _send(worker, STOP)
            if _alive(worker) and not worker.ready:
                # Still starting (seconds on a busy machine): not worth waiting for, this
                # process drains in its place (`finish`).
                assert worker.process is not None
                worker.process.terminate()
        while self.upstream_open() and time.monotonic() < end:
            await asyncio.sleep(0.05)
        for worker in self.workers:
            _send(worker, CLOSED)
        while any(_alive(w) for w in self.workers) and time.monotonic() < end:
            await asyncio.sleep(0.05)
        for worker in self.workers:
            if _alive(worker):
                log.error("worker=%s did not stop in time; terminating it", worker.index)
        codes = [w.process.exitcode for w in self.workers if w.process and not _alive(w)]
        log.info("ingest worker processes stopped exits=%s", ",".join(map(str, codes)))

    async def _finish(self, seconds: float) -> None:
        if self.finish is None:
            return
        try:
            handled = await asyncio.wait_for(asyncio.to_thread(self.finish), seconds)
        except TimeoutError:
            log.error("shutdown: what the workers left is not processed; it waits in the store")
            return
        except Exception as exc:  # noqa: BLE001 - the store is away: the mail waits there
            log.error("shutdown: what the workers left waits in the store: %s", describe(exc))
            return
        if handled:
            log.info("processed %d message(s) the worker processes left", handled)

    def _kill_all(self, grace: float = KILL_GRACE) -> None:
        """Whatever happened above: no worker outlives this component."""
        running = [w.process for w in self.workers if w.process is not None]
        for process in running:
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + grace
        for process in running:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join(1.0)
        for worker in self.workers:
            self._forget(worker)

    def _forget(self, worker: _Worker) -> None:
        self._close_channel(worker)
        if worker.process is not None and not worker.process.is_alive():
            worker.process.close()
            worker.process = None

    def _close_channel(self, worker: _Worker) -> None:
        if worker.channel is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(worker.channel.fileno())
        worker.channel.close()
        worker.channel = None


@contextlib.contextmanager
def _sigterm_held() -> Iterator[None]:
    """systemd sends SIGTERM to the whole control group, and the fork server reports the
    workers' exits to this process: it must outlive that signal while they drain. Started
    with SIGTERM blocked (the mask is inherited through fork and exec), it never takes
    one; a SIGTERM for this process meanwhile waits until the mask is restored."""
    # The resource tracker's start unblocks SIGTERM on its way out: it runs first.
    multiprocessing.resource_tracker.ensure_running()
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class _Wake:
    """The pool's wake-up with the in-process worker's interface (`wake.set()`), so that
    the listener wakes either without knowing which it has."""

    def __init__(self, pool: WorkerPool) -> None:
        self.set = pool.wake_workers


def _alive(worker: _Worker) -> bool:
    return worker.process is not None and worker.process.is_alive()


def _pid(worker: _Worker) -> int | None:
    return worker.process.pid if worker.process is not None else None


def _send(worker: _Worker, byte: bytes) -> None:
    """Never blocks the event loop: a worker whose socket is full has wakes pending
    anyway, and one that cannot read STOP is ended by the deadline."""
    if worker.channel is None:
        return
    with contextlib.suppress(BlockingIOError, InterruptedError, OSError):
        worker.channel.send(byte)


# --- the worker's side ---------------------------------------------------------------------


def _child(target: Target, parent_pid: int, *args: Any) -> None:
    """A worker's first steps, forked by the fork server: SIGTERM back (the server holds
    it blocked) and death with the main process; then `target`."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    _die_with_parent(parent_pid)
    target(*args)


def serve_worker(worker: IngestWorker, channel: socket.socket) -> int:
    """Run `worker` in this (child) process until the parent says stop, or goes away."""
    return asyncio.run(_serve(worker, _Channel(channel)))


async def _serve(worker: IngestWorker, channel: _Channel) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    closed = threading.Event()  # intake is closed (or the parent gone): drain and exit

    def readable() -> None:
        data = channel.recv()
        if data is None:
            return
        if not data:  # the parent is gone: nothing will be accepted any more
            loop.remove_reader(channel.fileno)
            closed.set()
            stop.set()
            return
        if WAKE in data:
            worker.wake.set()
        if STOP in data:
            stop.set()
        if CLOSED in data:
            closed.set()

    # systemd signals the whole control group: a worker hears SIGTERM with its parent and
    # waits for the parent's word that intake is closed before its final drain.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_reader(channel.fileno, readable)
    worker.upstream_open = lambda: not closed.is_set()
    worker.on_outcome = lambda state: channel.send(f"o {state}\n")
    heartbeat = asyncio.create_task(_heartbeat(worker, channel))
    log.info("ingest worker process ready instance=%s", worker.instance)
    try:
        await worker.run(stop)
    finally:
        heartbeat.cancel()
    log.info("ingest worker process stopped instance=%s", worker.instance)
    return 0


async def _heartbeat(worker: IngestWorker, channel: _Channel) -> None:
    while True:
        channel.send(f"a {worker.progress_age():.3f}\n")
        await asyncio.sleep(HEARTBEAT_SECONDS)


class _Channel:
    """The worker's end: read by the event loop when readable, written from the loop and
    the ingest thread (a lock keeps lines whole; a bounded wait, never forever)."""

    def __init__(self, sock: socket.socket) -> None:
        sock.settimeout(10.0)  # non-blocking underneath; a send waits at most this long
        self.sock = sock
        self.fileno = sock.fileno()
        self._lock = threading.Lock()

    def recv(self) -> bytes | None:
        try:
            return self.sock.recv(4096)
        except (BlockingIOError, InterruptedError, TimeoutError):
            return None
        except OSError:
            return b""

    def send(self, line: str) -> None:
        with self._lock, contextlib.suppress(OSError):
            self.sock.sendall(line.encode("ascii", "replace"))


def _die_with_parent(parent_pid: int) -> None:
    """On Linux this process is killed when the main process dies, even by SIGKILL: a
    thread waits on the main process's pidfd (its parent is the fork server, which the
    kernel's PR_SET_PDEATHSIG covers: the worker also dies with it)."""
    if not sys.platform.startswith("linux"):
        return  # the end of file on the channel stops the worker
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    try:
        pidfd = os.pidfd_open(parent_pid)
    except ProcessLookupError:  # gone already
        os._exit(0)
    except OSError:
        return  # a kernel without pidfds: the end of file on the channel
    threading.Thread(target=_kill_when_readable, args=(pidfd,), daemon=True,
                     name="buzon-parent-watch").start()  # fmt: skip


def _kill_when_readable(pidfd: int) -> None:
    select.select([pidfd], [], [])  # readable once that process has exited
    os.kill(os.getpid(), signal.SIGKILL)
