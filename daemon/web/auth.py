"""The API's bearer-token check: `Authorization: Bearer <token>` names the agent every
request acts as (recorded on the ticket's history, as `--as` is for the CLI)."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from daemon.web.parts import WebParts
from tickets import tokens
from tickets.models import utcnow


class Unauthorized(Exception):
    """No token, an unknown or revoked one, or one whose agent left the desk."""


async def authenticate(request: Request, parts: WebParts) -> str:
    """The agent of the request's token; `Unauthorized` (a 401) otherwise."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("an API token is needed: Authorization: Bearer <token>")
    agent = await run_in_threadpool(_verify, parts, token.strip())
    if agent is None:
        raise Unauthorized("the API token is unknown or revoked")
    if parts.agents and agent not in parts.agents:
        raise Unauthorized(f"the API token's agent {agent} is no longer configured")
    return agent


def _verify(parts: WebParts, token: str) -> str | None:
    with parts.sessions.begin() as session:
        return tokens.verify(session, token, utcnow())
