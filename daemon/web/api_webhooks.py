"""The webhook deliveries in the JSON API: the list (dead letters included) and a retry.

The routes carry no auth of their own: they are mounted behind the API's token check.
The logic is `tickets.webhooks`, shared with `buzon webhooks`; here only HTTP.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from daemon.web.parts import WebParts
from tickets import webhooks
from tickets.errors import TicketError
from tickets.models import utcnow
from tickets.webhooks import DeliveryNotFound


async def list_deliveries(request: Request) -> JSONResponse:
    """GET /api/v1/webhooks/deliveries?state=dead&limit=100"""
    parts: WebParts = request.app.state.parts
    state = request.query_params.get("state") or None
    try:
        limit = min(max(int(request.query_params.get("limit", "100")), 1), 1000)
    except ValueError:
        return JSONResponse({"error": "limit must be a number"}, status_code=400)

    def read() -> list[dict[str, object]]:
        with parts.sessions() as session:
            return webhooks.list_deliveries(session, state=state, limit=limit)

    try:
        return JSONResponse({"deliveries": await run_in_threadpool(read)})
    except TicketError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)


async def retry_delivery(request: Request) -> JSONResponse:
    """POST /api/v1/webhooks/deliveries/{id}/retry"""
    parts: WebParts = request.app.state.parts
    delivery_id: int = request.path_params["id"]

    def retry() -> dict[str, object]:
        with parts.sessions.begin() as session:
            return webhooks.retry(session, delivery_id, utcnow())

    try:
        return JSONResponse(await run_in_threadpool(retry))
    except DeliveryNotFound as exc:
        return JSONResponse({"error": str(exc)}, status_code=404)
    except TicketError as exc:  # already sent
        return JSONResponse({"error": str(exc)}, status_code=409)


def webhook_routes() -> list[Route]:
    return [
        Route("/api/v1/webhooks/deliveries", list_deliveries, methods=["GET"]),
        Route("/api/v1/webhooks/deliveries/{id:int}/retry", retry_delivery, methods=["POST"]),
    ]
