"""`/api/v1/addresses…` and `/api/v1/tickets/{number}/sla`: correspondents' addresses
with their bouncing marks (list, clear) and a ticket's SLA report, as `buzon addresses`
and `buzon sla show` give them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from daemon import operations
from daemon.web.api_json import Call, Endpoint, Param
from tickets import queries
from tickets.models import utcnow


def list_addresses(call: Call) -> dict[str, Any]:
    rows = operations.list_addresses(
        call.parts.sessions,
        call.parts.expire_bouncing,
        bouncing=call.params["bouncing"],
        limit=call.params["limit"],
    )
    return {"addresses": rows}


class ClearBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    addresses: list[str] = Field(min_length=1, description="Addresses whose mark to lift")


def clear_addresses(call: Call) -> dict[str, Any]:
    body: ClearBody = call.body
    cleared, unmarked = operations.clear_addresses(call.parts.sessions, body.addresses)
    return {"cleared": cleared, "not_bouncing": unmarked}


def sla_report(call: Call) -> dict[str, Any]:
    number = call.path["number"]
    with call.parts.sessions() as session:
        return queries.sla_report(session, number, call.parts.desk.sla_policy, utcnow())


# fmt: off
ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("GET", "/addresses", list_addresses,
             "Known addresses, latest bounce first (expired marks lifted first)", "addresses",
             (Param("bouncing", "boolean", "Only addresses marked bouncing (not mailed)",
                    default=False),
              Param("limit", "integer", "How many", default=1000, minimum=1, maximum=10000)),
             errors=(400,)),
    Endpoint("POST", "/addresses/clear", clear_addresses,
             "Lift bouncing marks: mail to these addresses resumes", "addresses",
             body=ClearBody, errors=(400,)),
    Endpoint("GET", "/tickets/{number:int}/sla", sla_report,
             "A ticket's SLA clocks: targets, due times, pauses, what has fired", "tickets",
             errors=(404,)),
)
# fmt: on
