"""systemd's notify protocol (READY, WATCHDOG, STOPPING): a datagram to $NOTIFY_SOCKET.

A no-op when buzón does not run under systemd (supervisord, a terminal, tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

log = logging.getLogger("buzon.supervisor")

# Answers whether the process can do its work now (the store answers, the worker moves).
HealthProbe = Callable[[], Awaitable[bool]]


def notify(state: str) -> bool:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(state.encode())
    return True


def watchdog_interval() -> float | None:
    """Half the interval systemd expects pings at, or None without a watchdog."""
    usec = os.environ.get("WATCHDOG_USEC")
    return int(usec) / 2_000_000 if usec and usec.isdigit() else None


async def watchdog(stop: asyncio.Event, healthy: HealthProbe | None = None) -> None:
    """Ping systemd while the loop is alive and `healthy` says yes: a stuck loop, a store
    that stopped answering or a stuck worker stops the pings, and systemd restarts us."""
    interval = watchdog_interval()
    if interval is None:
        await stop.wait()
        return
    fed = True
    while not stop.is_set():
        ok = healthy is None or await healthy()
        if ok:
            notify("WATCHDOG=1")
        if ok != fed:  # one line when feeding stops and one when it resumes
            if ok:
                log.info("watchdog fed again")
            else:
                log.error("watchdog not fed: the store does not answer or the worker is stuck")
            fed = ok
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)


def watchdog_with(
    healthy: HealthProbe,
) -> Callable[[asyncio.Event], Coroutine[Any, Any, None]]:
    """The watchdog component, fed only while `healthy` answers yes."""

    async def component(stop: asyncio.Event) -> None:
        await watchdog(stop, healthy)

    return component
