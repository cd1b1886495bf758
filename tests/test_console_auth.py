"""The console's sign-in rules on both databases: a link works once and not after its
time, a session ends when it expires or is closed, a password is checked with argon2
and only its hash is kept."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from daemon.wiring import App
from tickets.console_auth import (
    check_password,
    close_session,
    create_link,
    digest,
    find_session,
    open_session,
    set_password,
    use_link,
)
from tickets.errors import TicketError
from tickets.models import AgentPassword, ConsoleSession, SignInLink, utcnow

AGENT = "agente@soporte.example"


def test_a_link_signs_in_once_and_only_in_its_time(app: App) -> None:
    now = utcnow()
    with app.sessions.begin() as session:
        token = create_link(session, AGENT, 15, now)
        stale = create_link(session, AGENT, 15, now - timedelta(minutes=16))
        stored = set(session.scalars(select(SignInLink.token_hash)))
        assert stored == {digest(token), digest(stale)}  # only digests are kept
    with app.sessions.begin() as session:
        assert use_link(session, stale, now) is None
        assert use_link(session, "made-up", now) is None
        assert use_link(session, token, now) == AGENT
    with app.sessions.begin() as session:
        assert use_link(session, token, now) is None  # used up
        fresh = create_link(session, AGENT, 15, now)
    with app.sessions() as session:  # the expired link is gone; the used one is kept
        stored = set(session.scalars(select(SignInLink.token_hash)))
        assert stored == {digest(token), digest(fresh)}


def test_a_session_ends_when_it_expires_or_is_closed(app: App) -> None:
    now = utcnow()
    with app.sessions.begin() as session:
        opened = open_session(session, AGENT, 12, now)
        other = open_session(session, AGENT, 12, now)
    with app.sessions() as session:
        found = find_session(session, opened.token, now)
        assert found is not None and (found.agent, found.csrf) == (AGENT, opened.csrf)
        assert find_session(session, opened.token, now + timedelta(hours=12, seconds=1)) is None
        assert session.scalar(select(ConsoleSession.token_hash).limit(1)) != opened.token
    with app.sessions.begin() as session:
        close_session(session, opened.token, now)
    with app.sessions() as session:
        assert find_session(session, opened.token, now) is None
        assert find_session(session, other.token, now) is not None  # only that one
    with app.sessions.begin() as session:
        newest = open_session(session, AGENT, 12, now)
    with app.sessions() as session:  # the closed one is gone, the open ones stay
        kept = set(session.scalars(select(ConsoleSession.token_hash)))
        assert kept == {digest(other.token), digest(newest.token)}


def test_a_password_is_checked_with_argon2_and_kept_hashed(app: App) -> None:
    with app.sessions.begin() as session:
        assert not check_password(session, AGENT, "sin-clave-todavia")
        with pytest.raises(TicketError, match="at least 10"):
            set_password(session, AGENT, "corta", utcnow())
        set_password(session, AGENT, "una-clave-larga-1", utcnow())
    with app.sessions.begin() as session:
        stored = session.get(AgentPassword, AGENT)
        assert stored is not None and stored.password_hash.startswith("$argon2id$")
        assert check_password(session, AGENT, "una-clave-larga-1")
        assert not check_password(session, AGENT, "una-clave-larga-2")
        set_password(session, AGENT, "otra-clave-larga", utcnow())
    with app.sessions() as session:
        assert not check_password(session, AGENT, "una-clave-larga-1")
        assert check_password(session, AGENT, "otra-clave-larga")
