"""`/api/v1/tickets…`: the list, one ticket, its attachments, and every agent action
the CLI has (`buzon tickets …`), acting as the token's agent through the desk."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from daemon import operations
from daemon.desk import Acted, Action
from daemon.web.api_json import ApiError, Call, Endpoint, Handler, Param
from daemon.web.parts import WebParts
from tickets import actions, listing, queries, shaping
from tickets.blobstore import BlobStore
from tickets.lifecycle import status_named
from tickets.models import Ticket, utcnow

# --- reading --------------------------------------------------------------------------------

LIST_PARAMS = (
    Param("status", "string", "new, in_progress, … or resuelto, en curso, abiertos"),
    Param("level", "integer", "1 or 2", minimum=1, maximum=2),
    Param("requester", "string", "The requester's address"),
    Param("team", "string", "Only this team's tickets"),
    Param("assignee", "string", "Only tickets of this agent"),
    Param("category", "string", "Only this category (escalation type)"),
    Param("tag", "string", "Only tickets a routing rule tagged so"),
    Param("search", "string", "Only tickets whose text has these words"),
    Param("breached", "boolean", "Only tickets past an SLA due time", default=False),
    Param("due_within", "duration", "Only tickets due within e.g. 2h, 30m, 1d"),
    Param("limit", "integer", "Page size", default=100, minimum=1, maximum=1000),
    Param("offset", "integer", "Tickets to skip (paging)", default=0, minimum=0),
)


def list_tickets(call: Call) -> dict[str, Any]:
    p = call.params
    filters = listing.TicketFilters(
        status=p["status"],
        level=p["level"],
        requester=p["requester"],
        team=p["team"],
        assignee=p["assignee"],
        category=p["category"],
        tag=p["tag"],
        words=p["search"],
        breached=p["breached"],
        due_within=p["due_within"],
    )
    limit, offset = p["limit"], p["offset"]
    with call.parts.sessions() as session:
        rows = listing.list_tickets(
            session, call.parts.catalogue, filters, utcnow(), limit=limit, offset=offset
        )
    # A full page may have a next one; a short page is the last.
    following = offset + limit if len(rows) == limit else None
    return {"tickets": rows, "limit": limit, "offset": offset, "next_offset": following}


SEARCH_PARAMS = (
    Param("q", "string", "The words (any inflection, any accents)"),
    Param("limit", "integer", "How many, best first", default=20, minimum=1, maximum=1000),
)


def search_tickets(call: Call) -> dict[str, Any]:
    words = (call.params["q"] or "").strip()
    if not words:
        raise ApiError(400, "q: give the words to search for")
    with call.parts.sessions() as session:
        rows = listing.search_tickets(session, words, call.params["limit"])
    return {"tickets": rows}


def show_ticket(call: Call) -> dict[str, Any]:
    number = call.path["number"]
    now = utcnow()
    with call.parts.sessions() as session:
        detail = queries.ticket_detail(session, number, now)
        sla = queries.sla_report(session, number, call.parts.desk.sla_policy, now)
    return {**detail, "sla": sla}


def download_attachment(call: Call) -> Response:
    """The file as sent, always as a download: a mail's HTML or SVG must never run in
    the page of whoever opens it."""
    with call.parts.sessions() as session:
        found = queries.attachment(session, call.path["number"], call.path["attachment_id"])
    payload = BlobStore(call.parts.attachments_dir).get(found["sha256"])
    name = found["filename"] or "attachment"
    fallback = name.encode("ascii", "replace").decode().replace('"', "_").replace("?", "_")
    return Response(
        payload,
        media_type=found["content_type"] or "application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="{fallback}"; '
            f"filename*=UTF-8''{quote(name)}",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
        },
    )


# --- acting -------------------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StatusBody(_Body):
    status: str = Field(description="new, in_progress, … or in Spanish (resuelto, …)")
    note: str | None = Field(None, description="Why (kept on the history; not mailed)")


class AssignBody(_Body):
    agent: str | None = Field(None, description="The agent who handles it")
    team: str | None = Field(None, description="The team that handles it")
    note: str | None = Field(None, description="Why (needed to take it from another agent)")


class EscalateBody(_Body):
    team: str = Field(description="The team or specialty that takes it over")
    reason: str = Field(description="Why: the more detail, the better")
    type: str = Field(description="Escalation type (a category)")


class NoteBody(_Body):
    text: str


class ReplyBody(_Body):
    text: str = Field(description="The answer; as multipart/form-data, files go in `attachment`")
    status: str | None = Field(None, description="Also move the ticket to this status")


class PriorityBody(_Body):
    impact: str = Field(description="high, medium or low (as configured)")
    urgency: str = Field(description="high, medium or low (as configured)")


class CategoryBody(_Body):
    category: str


class AddressBody(_Body):
    address: str


class MergeBody(_Body):
    other: int = Field(description="The ticket merged into this one (it is closed)")


class CreateBody(_Body):
    requester: str = Field(description="The customer's address")
    subject: str
    text: str = ""
    cc: list[str] = Field(default_factory=list, description="Colleagues to keep informed")
    source: str = Field("phone", description=", ".join(shaping.SOURCES))
    language: str | None = Field(None, description="es or en (default: the desk's)")
    acknowledge: bool = Field(True, description="Send the customer an acknowledgement")


def _acted(parts: WebParts, number: int, done: Acted) -> dict[str, Any]:
    """What an action did: the ticket as it is now, the changes, and the mail queued."""
    with parts.sessions() as session:
        ticket = session.get(Ticket, number)
        summary = queries.ticket_summary(ticket) if ticket is not None else None
    return {
        "ticket": summary,
        "changes": [type(c).__name__ for c in done.changes],
        "mail": [
            {
                "kind": q.kind,
                "outbox_id": q.outbox_id,
                "recipients": list(q.recipients),
                "refused": [{"address": e, "reason": r} for e, r in q.refused],
            }
            for q in done.queued
        ],
    }


def _act(call: Call, action: Action) -> dict[str, Any]:
    number = call.path["number"]
    return _acted(call.parts, number, call.parts.desk.act(number, action))


def set_status(call: Call) -> dict[str, Any]:
    body: StatusBody = call.body
    status_named(body.status)  # an unknown name is refused before the ticket is locked
    wanted = body.status.strip().lower()
    return _act(call, lambda s, t: actions.set_status(s, t, wanted, call.agent, body.note))


def assign(call: Call) -> dict[str, Any]:
    body: AssignBody = call.body
    catalogue = call.parts.catalogue
    return _act(
        call,
        lambda s, t: actions.assign(
            s, t, call.agent, agent=body.agent, team=body.team, catalogue=catalogue, note=body.note
        ),
    )


def escalate(call: Call) -> dict[str, Any]:
    body: EscalateBody = call.body
    catalogue = call.parts.catalogue
    return _act(
        call,
        lambda s, t: actions.escalate(
            s,
            t,
            call.agent,
            team=body.team,
            reason=body.reason,
            escalation_type=body.type,
            catalogue=catalogue,
        ),
    )


def add_note(call: Call) -> dict[str, Any]:
    body: NoteBody = call.body
    return _act(call, lambda s, t: actions.add_note(s, t, call.agent, body.text))


def reply(call: Call) -> dict[str, Any]:
    body: ReplyBody = call.body
    number = call.path["number"]
    parts = call.parts
    blobs = BlobStore(parts.attachments_dir)
    done = operations.reply(
        parts.desk,
        blobs,
        parts.expire_bouncing,
        number,
        call.agent,
        body.text,
        call.files,
        body.status,
    )
    result = _acted(parts, number, done)
    unsent = operations.unsent(number, done.queued)
    if unsent is not None:
        result["warning"] = unsent  # recorded, so not an error: a retry would answer twice
    return result


def set_priority(call: Call) -> dict[str, Any]:
    body: PriorityBody = call.body
    matrix = call.parts.catalogue.matrix
    return _act(
        call,
        lambda s, t: actions.set_priority(
            s, t, call.agent, impact=body.impact, urgency=body.urgency, matrix=matrix
        ),
    )


def set_category(call: Call) -> dict[str, Any]:
    body: CategoryBody = call.body
    name = call.parts.catalogue.category(body.category)
    return _act(call, lambda s, t: shaping.set_category(s, t, call.agent, name))


def add_cc(call: Call) -> dict[str, Any]:
    body: AddressBody = call.body
    return _act(call, lambda s, t: actions.add_watcher(s, t, call.agent, body.address))


def remove_cc(call: Call) -> dict[str, Any]:
    address = call.path["address"]
    return _act(call, lambda s, t: actions.remove_watcher(s, t, call.agent, address))


def set_requester(call: Call) -> dict[str, Any]:
    body: AddressBody = call.body
    return _act(call, lambda s, t: shaping.set_requester(s, t, call.agent, body.address))


def merge(call: Call) -> dict[str, Any]:
    body: MergeBody = call.body
    return _act(call, lambda s, t: shaping.merge(s, t, call.agent, body.other))


def create(call: Call) -> dict[str, Any]:
    body: CreateBody = call.body
    parts = call.parts
    done = operations.create_ticket(
        parts.desk,
        call.agent,
        requester=body.requester,
        subject=body.subject,
        text=body.text,
        cc=body.cc,
        source=body.source,
        language=body.language or parts.language,
        acknowledge=body.acknowledge,
    )
    return _acted(parts, done.changes[0].ticket_id, done)


T = "tickets"
ONE = "/tickets/{number:int}"
REFUSED = (400, 404, 409, 422)


def _action(path: str, handler: Handler, summary: str, body: type[BaseModel]) -> Endpoint:
    """An agent's action on one ticket: POST with a JSON body."""
    return Endpoint("POST", ONE + path, handler, summary, T, body=body, errors=REFUSED)


ENDPOINTS = (
    Endpoint("GET", "/tickets", list_tickets, "Tickets, newest first (paged)", T, LIST_PARAMS,
             errors=(400, 422)),
    Endpoint("POST", "/tickets", create, "Open a ticket for a phone call, chat or visit", T,
             body=CreateBody, status=201, errors=(400, 422)),
    Endpoint("GET", "/tickets/search", search_tickets, "Full-text search, best match first", T,
             SEARCH_PARAMS, errors=(400,)),
    Endpoint("GET", ONE, show_ticket, "One ticket: thread, people, history, SLA, similar", T),
    Endpoint("GET", ONE + "/attachments/{attachment_id:int}", download_attachment,
             "Download an attachment", T, produces="application/octet-stream"),
    _action("/status", set_status, "Move the ticket to a status", StatusBody),
    _action("/assign", assign, "Give the ticket to an agent and/or a team", AssignBody),
    _action("/escalate", escalate, "Escalate to the second level", EscalateBody),
    _action("/notes", add_note, "Add an internal note (never mailed)", NoteBody),
    Endpoint("POST", ONE + "/replies", reply, "Answer the customer by mail, with attachments",
             T, body=ReplyBody, multipart=True, errors=(*REFUSED, 413)),
    _action("/priority", set_priority, "Set impact and urgency", PriorityBody),
    _action("/category", set_category, "Put the ticket in a category", CategoryBody),
    _action("/cc", add_cc, "CC a colleague from now on", AddressBody),
    Endpoint("DELETE", ONE + "/cc/{address:str}", remove_cc, "Stop CC'ing an address", T,
             errors=(404, 409, 422)),
    _action("/requester", set_requester, "Make an address the requester", AddressBody),
    _action("/merge", merge, "Merge another ticket into this one", MergeBody),
)  # fmt: skip
