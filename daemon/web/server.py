"""uvicorn inside the daemon's asyncio loop, as one more component of `buzon run`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator

import uvicorn
from starlette.applications import Starlette

log = logging.getLogger("buzon.web")


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the supervisor owns SIGTERM/SIGINT and
    stops every component (uvicorn would re-raise the signal after its shutdown)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class WebServer:
    """Binds at construction (a taken port is a configuration error at start, not a
    crashed component), serves until the stop event, then drains open requests."""

    def __init__(self, app: Starlette, host: str, port: int) -> None:
        self._socket = socket.create_server((host, port), reuse_port=False)
        self.port: int = self._socket.getsockname()[1]
        self.host = host
        self._server = _Server(
            uvicorn.Config(
                app,
                log_config=None,  # our logging setup, not uvicorn's
                access_log=False,
                lifespan="off",
                server_header=False,
                timeout_graceful_shutdown=5,
            )
        )

    @property
    def serving(self) -> bool:
        return bool(self._server.started)

    def ready(self) -> tuple[bool, str]:
        return (True, "serving") if self.serving else (False, "not serving yet")

    async def run(self, stop: asyncio.Event) -> None:
        serve = asyncio.create_task(self._server.serve(sockets=[self._socket]))
        log.info("web listening host=%s port=%s (/api, console /)", self.host, self.port)
        try:
            await asyncio.wait(
                [serve, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            self._server.should_exit = True
            await serve
            self._socket.close()
