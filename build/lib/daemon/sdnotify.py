"""systemd's notify protocol (READY, WATCHDOG, STOPPING): a datagram to $NOTIFY_SOCKET.

A no-op when buzón does not run under systemd (supervisord, a terminal, tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket


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


async def watchdog(stop: asyncio.Event) -> None:
    """Ping systemd while the loop is alive: a stuck loop stops the pings, systemd restarts."""
    interval = watchdog_interval()
    if interval is None:
        await stop.wait()
        return
    while not stop.is_set():
        notify("WATCHDOG=1")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
