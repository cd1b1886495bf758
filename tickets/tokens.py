"""Per-agent API tokens: made here, shown once, kept only as their SHA-256.

A token is random (`secrets.token_urlsafe`), so a plain SHA-256 is enough to keep it
(no salt or slow hash needed: there is nothing to guess). Looking a token up by its
digest leaks nothing useful through timing: an attacker would have to control the
digest, not the token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tickets.actions import Catalogue
from tickets.errors import TicketError, TicketNotFound
from tickets.models import ApiToken

PREFIX = "bzn_"  # tells a buzón token apart in a config file or a secret scanner
# last_used_at is written at most this often: a busy integration must not turn every
# request into a write.
TOUCH_EVERY = timedelta(minutes=1)


@dataclass(frozen=True)
class NewToken:
    id: int
    agent: str
    token: str  # the only time it exists in clear


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create(
    session: Session, catalogue: Catalogue, agent: str, label: str, now: datetime
) -> NewToken:
    """A new token for a configured agent (named by address or name)."""
    if not catalogue.agents:
        raise TicketError("no agents are configured; list them under `agents` first")
    address = catalogue.agent(agent)
    token = PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(agent=address, label=label.strip(), token_hash=digest(token), created_at=now)
    session.add(row)
    session.flush()
    return NewToken(row.id, address, token)


def verify(session: Session, token: str, now: datetime) -> str | None:
    """The agent a live token belongs to, or None (unknown or revoked)."""
    wanted = digest(token)
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == wanted))
    if row is None or row.revoked_at is not None:
        return None
    if not hmac.compare_digest(row.token_hash, wanted):  # a database's collation quirk
        return None
    if row.last_used_at is None or now - row.last_used_at >= TOUCH_EVERY:
        row.last_used_at = now
    return row.agent


def list_tokens(session: Session) -> list[dict[str, Any]]:
    """Every token but its secret, newest first."""
    rows = session.scalars(select(ApiToken).order_by(ApiToken.id.desc()))
    return [
        {
            "id": r.id,
            "agent": r.agent,
            "label": r.label,
            "created_at": r.created_at,
            "last_used_at": r.last_used_at,
            "revoked_at": r.revoked_at,
        }
        for r in rows
    ]


def revoke(session: Session, token_id: int, now: datetime) -> str:
    """Revoke token `token_id` for good; the agent it belonged to."""
    row = session.get(ApiToken, token_id, with_for_update=True)
    if row is None:
        raise TicketNotFound(f"no API token {token_id}")
    if row.revoked_at is not None:
        raise TicketError(f"API token {token_id} was already revoked at {row.revoked_at}")
    row.revoked_at = now
    return row.agent
