"""The ASGI application: the JSON API under /api/v1, the console at /."""

from __future__ import annotations

from starlette.applications import Starlette

from daemon.web.api import api_routes
from daemon.web.console import console_routes
from daemon.web.parts import WebParts


def build(parts: WebParts) -> Starlette:
    routes = [*api_routes(parts), *console_routes(parts)]
    app = Starlette(routes=routes)
    app.state.parts = parts
    return app
