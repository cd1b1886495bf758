"""`/api/v1/inbound…` and `/api/v1/outbox…`: the stored raw messages (list, reprocess,
release from spam) and the outbound mail (list, retry), as `buzon inbound` and
`buzon outbox` do them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from daemon import operations
from daemon.web.api_json import ApiError, Call, Endpoint, Param
from notifier import outbox
from tickets import queries
from tickets.models import RawState, utcnow

RAW_STATES = [s.value for s in RawState]
OUTBOX_STATES = [outbox.PENDING, outbox.SENT, outbox.FAILED]


def _one_of(name: str, value: str | None, choices: list[str]) -> str | None:
    if value is not None and value not in choices:
        raise ApiError(422, f"unknown {name} {value!r}; one of: {', '.join(choices)}")
    return value


def list_inbound(call: Call) -> dict[str, Any]:
    state = _one_of("state", call.params["state"], RAW_STATES)
    with call.parts.sessions() as session:
        rows = queries.list_raw(session, state=state, limit=call.params["limit"])
    return {"messages": rows}


class ReprocessBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    raw_id: int | None = Field(None, description="The message to process again")
    failed: bool = Field(False, description="Every failed and quarantined message")


def reprocess(call: Call) -> dict[str, Any]:
    body: ReprocessBody = call.body
    if body.raw_id is None and not body.failed:
        raise ApiError(400, "give a raw_id or failed: true")
    states = operations.reprocess(call.parts.sessions, call.parts.desk, body.raw_id)
    return {"reprocessed": states.total(), "states": dict(states)}


class ReleaseBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    raw_ids: list[int] = Field(min_length=1, description="Messages kept as spam")


def release(call: Call) -> dict[str, Any]:
    body: ReleaseBody = call.body
    done = operations.release(call.parts.sessions, call.parts.desk, body.raw_ids)
    return {
        "released": [
            {"raw_id": raw_id, "state": o.state, "ticket": o.ticket_id} for raw_id, o in done
        ]
    }


def list_outbox(call: Call) -> dict[str, Any]:
    state = _one_of("state", call.params["state"], OUTBOX_STATES)
    with call.parts.sessions() as session:
        rows = outbox.list_rows(session, state=state, limit=call.params["limit"])
    return {"mails": rows}


def retry(call: Call) -> dict[str, Any]:
    outbox_id = call.path["outbox_id"]
    operations.retry_outbox(call.parts.sessions, outbox_id, utcnow())
    return {"id": outbox_id, "state": outbox.PENDING}


def _state(choices: list[str]) -> Param:
    return Param("state", "string", "Only this state: " + ", ".join(choices))


LIMIT = Param("limit", "integer", "How many, newest first", default=100, minimum=1, maximum=1000)

ENDPOINTS = (
    Endpoint("GET", "/inbound", list_inbound, "Stored raw messages, newest first", "inbound",
             (_state(RAW_STATES), LIMIT), errors=(400, 422)),
    Endpoint("POST", "/inbound/reprocess", reprocess, "Process stored messages again",
             "inbound", body=ReprocessBody, errors=(400, 404)),
    Endpoint("POST", "/inbound/release", release, "Not spam: make tickets of these messages",
             "inbound", body=ReleaseBody, errors=(400, 422)),
    Endpoint("GET", "/outbox", list_outbox, "Outbound mails, newest first", "outbox",
             (_state(OUTBOX_STATES), LIMIT), errors=(400, 422)),
    Endpoint("POST", "/outbox/{outbox_id:int}/retry", retry, "Put a failed mail back in line",
             "outbox", errors=(404, 409)),
)  # fmt: skip
