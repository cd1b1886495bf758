"""The ASGI application: the JSON API under /api, the console at /."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from daemon.web.console import console_routes
from daemon.web.parts import WebParts


def build(parts: WebParts) -> Starlette:
    async def ping(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/api/ping", ping), *console_routes(parts)])
    app.state.parts = parts
    return app
