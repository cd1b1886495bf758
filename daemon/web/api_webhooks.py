"""`/api/v1/webhooks/deliveries…`: the webhook deliveries (dead letters included) and a
retry (one, or every dead one), as `buzon webhooks list|retry` do them, behind the API's
token check."""

from __future__ import annotations

from typing import Any

from daemon import operations
from daemon.web.api_json import ApiError, Call, Endpoint, Param
from tickets import webhooks
from tickets.errors import TicketError
from tickets.models import utcnow
from tickets.webhooks import DeliveryNotFound


def list_deliveries(call: Call) -> dict[str, Any]:
    with call.parts.sessions() as session:
        try:
            rows = webhooks.list_deliveries(
                session, state=call.params["state"], limit=call.params["limit"]
            )
        except TicketError as exc:  # an unknown state
            raise ApiError(400, str(exc)) from None
    return {"deliveries": rows}


def retry_dead(call: Call) -> dict[str, Any]:
    return {"retried": operations.retry_dead_webhooks(call.parts.sessions, utcnow())}


def retry_delivery(call: Call) -> dict[str, Any]:
    delivery_id = call.path["delivery_id"]
    try:
        with call.parts.sessions.begin() as session:
            return webhooks.retry(session, delivery_id, utcnow())
    except DeliveryNotFound:
        raise
    except TicketError as exc:  # already sent, or being sent right now
        raise ApiError(409, str(exc)) from None


STATE = Param("state", "string", "Only this state: " + ", ".join(webhooks.STATES))
LIMIT = Param("limit", "integer", "How many, newest first", default=100, minimum=1, maximum=1000)

# fmt: off
ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("GET", "/webhooks/deliveries", list_deliveries,
             "Webhook deliveries, newest first (state=dead: the dead letters)", "webhooks",
             (STATE, LIMIT), errors=(400,)),
    Endpoint("POST", "/webhooks/deliveries/retry-dead", retry_dead,
             "Put every dead delivery back in line", "webhooks", errors=()),
    Endpoint("POST", "/webhooks/deliveries/{delivery_id:int}/retry", retry_delivery,
             "Put a delivery back in line, with a fresh series of attempts", "webhooks",
             errors=(404, 409)),
)
# fmt: on
