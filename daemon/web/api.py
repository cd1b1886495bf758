"""The JSON API under /api/v1: its routes, each behind the bearer-token check, and its
OpenAPI document (public: it describes, it holds no data)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from daemon.web import api_addresses, api_queues, api_tickets, api_webhooks
from daemon.web.api_json import Endpoint, route
from daemon.web.openapi import document
from daemon.web.parts import WebParts

PREFIX = "/api/v1"
ENDPOINTS: tuple[Endpoint, ...] = (
    *api_tickets.ENDPOINTS,
    *api_queues.ENDPOINTS,
    *api_webhooks.ENDPOINTS,
    *api_addresses.ENDPOINTS,
)


def api_routes(parts: WebParts) -> list[BaseRoute]:
    spec = document(ENDPOINTS, PREFIX, _version())

    async def openapi(request: Request) -> JSONResponse:
        return JSONResponse(spec)

    return [
        *(route(parts, e, PREFIX) for e in ENDPOINTS),
        Route(PREFIX + "/openapi.json", openapi, methods=["GET"]),
    ]


def _version() -> str:
    try:
        return version("buzon")
    except PackageNotFoundError:
        return "unknown"
