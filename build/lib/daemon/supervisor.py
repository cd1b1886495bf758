"""Runs components side by side on one asyncio loop, with a clean SIGTERM.

A component is an async callable that works until the shared `stop` event is set,
then finishes what it holds and returns. If one dies, the others are stopped too
and the process exits non-zero, so that the supervisor restarts it.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from daemon import sdnotify

log = logging.getLogger("buzon.supervisor")

Component = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


async def serve(components: dict[str, Component], stop: asyncio.Event | None = None) -> int:
    """Run every component until SIGTERM/SIGINT (or `stop`); return the exit code."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _on_signal, stop, sig)
    components = {**components, "watchdog": sdnotify.watchdog}
    tasks = {asyncio.create_task(run(stop), name=name): name for name, run in components.items()}
    log.info("started components=%s", ",".join(components))
    sdnotify.notify("READY=1")
    failed = False
    pending = set(tasks)
    while pending:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task.cancelled() or task.exception() is None:
                if not stop.is_set():
                    log.error("component=%s ended unexpectedly; stopping", tasks[task])
                    failed = True
            else:
                exc = task.exception()
                log.error("component=%s crashed: %s: %s", tasks[task], type(exc).__name__, exc)
                failed = True
            if not stop.is_set():
                sdnotify.notify("STOPPING=1")
            stop.set()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(sig)
    log.info("stopped cleanly" if not failed else "stopped after a failure")
    return 1 if failed else 0


def _on_signal(stop: asyncio.Event, sig: signal.Signals) -> None:
    if not stop.is_set():
        log.info("received %s; finishing work in hand", sig.name)
        sdnotify.notify("STOPPING=1")
    stop.set()
