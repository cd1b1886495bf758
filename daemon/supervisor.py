"""Runs components side by side on one asyncio loop, with a clean SIGTERM.

A component is an async callable that works until the shared `stop` event is set,
then finishes what it holds and returns. If one dies, the others are stopped too
and the process exits non-zero, so that the supervisor restarts it.

Stopping is bounded: components get `stop_timeout` after the stop to return, and a
thread blocked on a partitioned database (which no Python code can interrupt) does not
keep the process alive — it exits at once, having acknowledged only committed mail.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from daemon import sdnotify
from daemon.config import ConfigError
from tickets.errors import describe

log = logging.getLogger("buzon.supervisor")

EX_CONFIG = 78  # sysexits: a configuration problem (also daemon.cli.common's)
Component = Callable[[asyncio.Event], Coroutine[Any, Any, None]]
T = TypeVar("T")

# Below systemd's TimeoutStopSec (30 s in deploy/systemd) and above smtp.shutdown_grace.
STOP_TIMEOUT = 25.0
# Thread name prefixes of the pools that run blocking database calls.
IO_THREADS = ("buzon-io", "buzon-intake")


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run` for the serving commands, on uvloop's event loop when it is installed:
    its transports and callbacks are C, so each SMTP reply and wake costs the listener
    less. Without uvloop (an import failure), asyncio's own loop serves the same."""
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(main)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def serve(
    components: dict[str, Component],
    stop: asyncio.Event | None = None,
    *,
    stop_timeout: float = STOP_TIMEOUT,
) -> int:
    """Run every component until SIGTERM/SIGINT (or `stop`); return the exit code."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    # Our own pool for to_thread, so that at exit we can tell a stuck call from an idle one.
    executor = ThreadPoolExecutor(thread_name_prefix=IO_THREADS[0])
    loop.set_default_executor(executor)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _on_signal, stop, sig)
    components = {"watchdog": sdnotify.watchdog, **components}  # wiring may bring its own
    tasks = {asyncio.create_task(run(stop), name=name): name for name, run in components.items()}
    log.info("started components=%s", ",".join(components))
    sdnotify.notify("READY=1")
    code = await _wait(tasks, stop, stop_timeout)
    failed = code != 0
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(sig)
    executor.shutdown(wait=False, cancel_futures=True)
    stuck = await _stuck_threads(grace=2.0)
    if stuck:
        _exit_now(code, stuck)
    log.info("stopped cleanly" if not failed else "stopped after a failure")
    return code


async def _wait(tasks: dict[asyncio.Task[None], str], stop: asyncio.Event, limit: float) -> int:
    """Wait for every component; past `limit` after the stop, cancel the rest. The exit
    code: 1 if one failed (crashed, ended on its own, or had to be cancelled), 78 when it
    failed on the configuration (a busy port), so the supervisor does not loop on it."""
    failed = 0
    pending = set(tasks)
    deadline: float | None = None
    while pending:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        done, pending = await asyncio.wait(
            pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if not done:  # the deadline passed
            names = ",".join(sorted(tasks[t] for t in pending))
            log.error("components=%s did not stop within %gs; abandoning them", names, limit)
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=1.0)
            return failed or 1
        for task in done:
            if task.cancelled() or task.exception() is None:
                if not stop.is_set():
                    log.error("component=%s ended unexpectedly; stopping", tasks[task])
                    failed = failed or 1
            else:
                exc = task.exception()
                assert exc is not None
                # describe(): a database error's text carries its parameters (mail bodies).
                log.error("component=%s crashed: %s", tasks[task], describe(exc))
                failed = failed or (EX_CONFIG if isinstance(exc, ConfigError) else 1)
            if not stop.is_set():
                sdnotify.notify("STOPPING=1")
            stop.set()
        if deadline is None and stop.is_set():
            deadline = time.monotonic() + limit
    return failed


async def _stuck_threads(grace: float) -> list[str]:
    """Names of database threads still busy `grace` seconds after their pools shut down
    (idle ones exit at once): calls hung on the network."""
    deadline = time.monotonic() + grace
    while True:
        busy = [t.name for t in threading.enumerate() if t.name.startswith(IO_THREADS)]
        if not busy or time.monotonic() >= deadline:
            return busy
        await asyncio.sleep(0.05)


def _exit_now(code: int, stuck: list[str]) -> None:
    """Python would join those threads at exit, i.e. hang until the network returns.
    Everything acknowledged is committed, so leaving now loses nothing."""
    log.error("exiting with %d database call(s) stuck on the network: %s", len(stuck),
              ",".join(sorted(stuck)))  # fmt: skip
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _on_signal(stop: asyncio.Event, sig: signal.Signals) -> None:
    if not stop.is_set():
        log.info("received %s; finishing work in hand", sig.name)
        sdnotify.notify("STOPPING=1")
    stop.set()
