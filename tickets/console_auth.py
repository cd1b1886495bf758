"""Who may use the agents' console: argon2 passwords, one-time sign-in links, sessions.

Every secret handed out (a link's token, a session's cookie) is random and only its
SHA-256 is stored: a copy of the database opens no console. A link is used at most once
(a conditional UPDATE, so two clicks racing cannot both sign in) and expires; a session
expires and is revoked by signing out. Which addresses are agents is the caller's
knowledge (the configuration): these functions trust the `agent` they are given.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import quote

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import CursorResult, delete, select, update
from sqlalchemy.orm import Session

from tickets.errors import TicketError
from tickets.models import AgentPassword, ConsoleSession, SignInLink

MIN_PASSWORD_LENGTH = 10

_hasher = PasswordHasher()
# Verified when the agent has no password, so that the answer takes as long as for one
# who has (the time of a sign-in must not tell who has a password).
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))


@dataclass(frozen=True)
class Opened:
    """A new session: the cookie's token and the token its forms carry."""

    token: str
    csrf: str


@dataclass(frozen=True)
class SignedIn:
    agent: str
    csrf: str


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# --- passwords --------------------------------------------------------------------------------


def set_password(session: Session, agent: str, password: str, now: datetime) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise TicketError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    row = session.get(AgentPassword, agent)
    if row is None:
        session.add(
            AgentPassword(agent=agent, password_hash=_hasher.hash(password), updated_at=now)
        )
    else:
        row.password_hash = _hasher.hash(password)
        row.updated_at = now


def check_password(session: Session, agent: str, password: str) -> bool:
    """True when `agent` has a password and this is it; a hash made with weaker
    parameters than today's is replaced on the way."""
    row = session.get(AgentPassword, agent)
    try:
        _hasher.verify(row.password_hash if row else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return False
    if row is None:
        return False
    if _hasher.check_needs_rehash(row.password_hash):
        row.password_hash = _hasher.hash(password)
    return True


# --- one-time links ---------------------------------------------------------------------------


def create_link(session: Session, agent: str, minutes: float, now: datetime) -> str:
    """A new link's token (to put in the mail; only its digest is kept)."""
    # The agent's dead links go as a new one comes: the table does not grow without end.
    session.execute(
        delete(SignInLink).where(SignInLink.agent == agent, SignInLink.expires_at <= now)
    )
    token = secrets.token_urlsafe(32)
    session.add(
        SignInLink(
            token_hash=digest(token),
            agent=agent,
            created_at=now,
            expires_at=now + timedelta(minutes=minutes),
        )
    )
    session.flush()
    return token


def link_url(base_url: str, token: str) -> str:
    """Where a link's token is redeemed (the console's page for it, daemon.web)."""
    return f"{base_url.rstrip('/')}/signin/link?token={quote(token, safe='')}"


def use_link(session: Session, token: str, now: datetime) -> str | None:
    """The agent of a valid link, which is used up by this call; None for an unknown,
    expired or already used one."""
    hashed = digest(token)
    result = session.execute(
        update(SignInLink)
        .where(
            SignInLink.token_hash == hashed,
            SignInLink.used_at.is_(None),
            SignInLink.expires_at > now,
        )
        .values(used_at=now)
    )
    if not isinstance(result, CursorResult) or result.rowcount != 1:
        return None
    return session.scalar(select(SignInLink.agent).where(SignInLink.token_hash == hashed))


# --- sessions ---------------------------------------------------------------------------------


def open_session(session: Session, agent: str, hours: float, now: datetime) -> Opened:
    # The agent's ended sessions go as a new one opens (as links do).
    session.execute(
        delete(ConsoleSession).where(
            ConsoleSession.agent == agent,
            (ConsoleSession.expires_at <= now) | ConsoleSession.revoked_at.is_not(None),
        )
    )
    opened = Opened(secrets.token_urlsafe(32), secrets.token_urlsafe(32))
    session.add(
        ConsoleSession(
            token_hash=digest(opened.token),
            agent=agent,
            csrf=opened.csrf,
            created_at=now,
            expires_at=now + timedelta(hours=hours),
        )
    )
    return opened


def find_session(session: Session, token: str, now: datetime) -> SignedIn | None:
    row = session.scalar(
        select(ConsoleSession).where(
            ConsoleSession.token_hash == digest(token),
            ConsoleSession.revoked_at.is_(None),
            ConsoleSession.expires_at > now,
        )
    )
    return SignedIn(row.agent, row.csrf) if row else None


def close_session(session: Session, token: str, now: datetime) -> None:
    session.execute(
        update(ConsoleSession)
        .where(ConsoleSession.token_hash == digest(token), ConsoleSession.revoked_at.is_(None))
        .values(revoked_at=now)
    )
