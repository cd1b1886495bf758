"""How an API route is declared and run: one `Endpoint` row per route (path, method,
query parameters, body model, handler), from which both the Starlette route and the
OpenAPI document are made, so that the two cannot disagree.

A handler is plain synchronous code (the database is synchronous): it runs in
Starlette's thread pool, never on the daemon's event loop, where SMTP sessions live.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from daemon.web.auth import Unauthorized, authenticate
from daemon.web.parts import WebParts
from notifier.errors import OutboxError
from tickets.actions import NewAttachment
from tickets.errors import InvalidTransition, TicketError, TicketNotFound, describe
from tickets.listing import parse_duration

MAX_FILES = 20  # attachments in one reply
# All of one reply's attachments: what common relays still take in one mail (and what
# an agent's upload may hold in memory).
MAX_UPLOAD_BYTES = 25 * 1024 * 1024

log = logging.getLogger("buzon.web")


class ApiError(Exception):
    """A refusal with its HTTP status; the message is the one the CLI would print."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Param:
    """A query parameter: `kind` is string, integer, boolean or duration (30m, 2h, 1d)."""

    name: str
    kind: str
    description: str
    default: Any = None
    minimum: int | None = None
    maximum: int | None = None


@dataclass(frozen=True)
class Call:
    """One request as a handler sees it: who asks, and what they sent, parsed."""

    parts: WebParts
    agent: str
    path: Mapping[str, Any]
    params: Mapping[str, Any]
    body: Any = None  # the endpoint's body model, validated
    files: list[NewAttachment] = field(default_factory=list)


Handler = Callable[[Call], Any]


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # Starlette syntax, under /api/v1: "/tickets/{number:int}"
    handler: Handler
    summary: str
    tag: str
    params: tuple[Param, ...] = ()
    body: type[BaseModel] | None = None
    multipart: bool = False  # the body may also come as multipart/form-data with files
    status: int = 200
    produces: str = "application/json"
    errors: tuple[int, ...] = (404, 422)


class ApiResponse(JSONResponse):
    """JSON with dates as ISO 8601 UTC ("2026-12-01T11:20:23Z")."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, default=_encode).encode("utf-8")


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    raise TypeError(f"{type(value).__name__} is not JSON")


def error(status: int, message: str, headers: Mapping[str, str] | None = None) -> ApiResponse:
    return ApiResponse({"error": message}, status_code=status, headers=headers)


def status_of(exc: Exception) -> int:
    """The HTTP status of a domain refusal: an unknown name 422, a missing thing 404, a
    state that forbids the change 409, anything else the domain refuses 422."""
    message = str(exc)
    if message.startswith("unknown "):
        return 422
    if isinstance(exc, TicketNotFound) or message.startswith("no "):
        return 404
    if isinstance(exc, InvalidTransition | OutboxError):
        return 409
    return 422


def route(parts: WebParts, endpoint: Endpoint, prefix: str) -> Route:
    async def serve(request: Request) -> Response:
        try:
            agent = await authenticate(request, parts)
            call = await _read(request, parts, endpoint, agent)
            result = await run_in_threadpool(endpoint.handler, call)
        except Unauthorized as exc:
            return error(401, str(exc), {"WWW-Authenticate": "Bearer"})
        except ApiError as exc:
            return error(exc.status, str(exc))
        except (TicketError, OutboxError) as exc:
            return error(status_of(exc), str(exc))
        except SQLAlchemyError as exc:  # one line, never the statement (it may hold mail)
            log.warning("api %s %s: database unavailable (%s)", endpoint.method,
                        endpoint.path, describe(exc))  # fmt: skip
            return error(503, f"database unavailable: {describe(exc)}")
        if endpoint.method != "GET":  # who changed what, never with what text
            log.info("api %s %s by %s", endpoint.method, request.url.path, agent)
        if isinstance(result, Response):
            return result
        return ApiResponse(result, status_code=endpoint.status)

    return Route(prefix + endpoint.path, serve, methods=[endpoint.method])


async def _read(request: Request, parts: WebParts, endpoint: Endpoint, agent: str) -> Call:
    params = {p.name: _param(p, request.query_params.get(p.name)) for p in endpoint.params}
    if endpoint.body is None:
        return Call(parts, agent, request.path_params, params)
    content_type = request.headers.get("content-type", "")
    files: list[NewAttachment] = []
    if endpoint.multipart and content_type.startswith("multipart/form-data"):
        data, files = await _form(request)
    else:
        data = await _json(request)
    try:
        body = endpoint.body.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "body"
        raise ApiError(400, f"{where}: {first['msg']}") from None
    return Call(parts, agent, request.path_params, params, body, files)


async def _json(request: Request) -> Any:
    raw = await request.body()
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        raise ApiError(400, "the body is not JSON") from None


async def _form(request: Request) -> tuple[dict[str, Any], list[NewAttachment]]:
    """Text fields as a dict, and every uploaded file (field `attachment`, repeatable)."""
    try:
        form = await request.form(max_files=MAX_FILES)
    except HTTPException as exc:  # Starlette's refusal of a malformed or oversized part
        raise ApiError(400, exc.detail) from None
    data: dict[str, Any] = {}
    files: list[NewAttachment] = []
    total = 0
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            total += value.size or 0
            if total > MAX_UPLOAD_BYTES:
                await form.close()
                raise ApiError(413, f"the attachments exceed {MAX_UPLOAD_BYTES // 2**20} MiB")
            content = await value.read()
            kind = value.content_type or "application/octet-stream"
            files.append(NewAttachment(value.filename or "attachment", kind, content))
        else:
            data[key] = value
    await form.close()
    return data, files


_TRUE = {"1", "true", "yes"}
_FALSE = {"0", "false", "no", ""}


def _param(param: Param, raw: str | None) -> Any:
    if raw is None:
        return param.default
    try:
        value: Any = raw
        if param.kind == "integer":
            value = int(raw)
            low, high = param.minimum, param.maximum
            if (low is not None and value < low) or (high is not None and value > high):
                raise ValueError(f"{param.name} must be between {low} and {high}")
        elif param.kind == "boolean":
            if raw.lower() not in _TRUE | _FALSE:
                raise ValueError(f"{param.name} must be true or false")
            value = raw.lower() in _TRUE
        elif param.kind == "duration":
            value = parse_duration(raw)
    except ValueError as exc:
        message = str(exc) if param.name in str(exc) else f"{param.name}: {exc}"
        raise ApiError(400, message) from None
    return value


def path_template(path: str) -> str:
    """ "/tickets/{number:int}" as OpenAPI writes it: "/tickets/{number}"."""
    return re.sub(r"\{(\w+):\w+\}", r"{\1}", path)
