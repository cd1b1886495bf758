"""Who may receive a mail about a ticket: the loop rules and the send budget.

The requester and every watcher (CC'd colleagues) are candidates. Refused are: our own
addresses and aliases, agents, no-reply/mailer-daemon/postmaster style addresses,
addresses known to bounce, the person whose own action caused the mail, and, for
automatic mail, anyone over the send budget (per recipient and per ticket, counted
from `outbox_recipients` in a sliding window, across every kind of automatic mail).
An address that never wrote to us (a stranger: no inbound article from it, e.g. CC'd on
a forged mail) gets automatic mail about at most `stranger_tickets` tickets per
`stranger_window_seconds`: backscatter is bounded, while a colleague CC'd on one
ticket keeps getting every update of it.
Every refusal is returned so that the caller records it in the ticket's history.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tickets.models import (
    Article,
    ArticleKind,
    MailAddress,
    OutboxRecipient,
    ParticipantRole,
    Ticket,
)

# Local parts that never read mail (RFC 2142 roles, bulk senders' no-reply boxes).
_NOBODY = re.compile(
    r"^(?:no[-_.]?reply|do[-_.]?not[-_.]?reply|donotreply|mailer[-_.]?daemon|postmaster|"
    r"bounces?|listserv|majordomo|auto[-_.]?reply|autoresponder)(?:[-+_.].*)?$",
    re.IGNORECASE,
)
# What we can put in an SMTP envelope and a header without SMTPUTF8: plain ASCII.
# Any mailbox without characters that could break a header or an SMTP command; non-ASCII
# ones (josé@…) go out with SMTPUTF8 when the relay offers it.
_SAFE = re.compile(
    r"^[^\s@<>()\[\],;:\\\"\x00-\x1f\x7f]{1,64}@[^\s@<>()\[\],;:\\\"\x00-\x1f\x7f]{1,253}$"
)


@dataclass(frozen=True)
class Budget:
    per_recipient: int
    per_ticket: int
    window_seconds: int
    stranger_tickets: int = 3
    stranger_window_seconds: int = 86400


@dataclass(frozen=True)
class Recipient:
    email: str
    name: str
    role: str  # requester / watcher


@dataclass(frozen=True)
class Refusal:
    email: str
    reason: str  # own_address / agent / no_reply / bouncing / actor / budget_* / unsafe /
    # stranger (and, recorded by ingest, watcher_cap / invalid_address)


@dataclass
class Selection:
    allowed: list[Recipient] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)


def select_recipients(
    session: Session,
    ticket: Ticket,
    *,
    is_own: Callable[[str], bool],
    is_agent: Callable[[str], bool],
    exclude: Collection[str] = (),
    budget: Budget | None,
    now: datetime,
) -> Selection:
    """The candidates that pass every rule; `budget=None` for mail a person wrote."""
    selection = Selection()
    candidates = _candidates(ticket)
    bouncing = _bouncing(session, [c.email for c in candidates])
    excluded = {e.lower() for e in exclude}
    ticket_used = _ticket_used(session, ticket.id, budget, now)
    wrote = _wrote_to_us(session, [c.email for c in candidates]) if budget else set()
    for candidate in candidates:
        reason = _static_reason(candidate.email, is_own, is_agent, bouncing, excluded)
        if reason is None and budget is not None:
            reason = _budget_reason(session, candidate.email, ticket_used, budget, now)
            if reason is None and candidate.email not in wrote:
                reason = _stranger_reason(session, candidate.email, ticket.id, budget, now)
        if reason is None:
            selection.allowed.append(candidate)
            ticket_used += 1
        else:
            selection.refused.append(Refusal(candidate.email, reason))
    return selection


def _candidates(ticket: Ticket) -> list[Recipient]:
    """Requester first, then watchers in the order they joined; each address once."""
    people = sorted(
        (p for p in ticket.participants if p.role != ParticipantRole.AGENT),
        key=lambda p: (p.role != ParticipantRole.REQUESTER, p.id or 0),
    )
    seen: set[str] = set()
    result = []
    for person in people:
        email = person.email.lower()
        if email not in seen:
            seen.add(email)
            result.append(Recipient(email, person.name, person.role))
    if ticket.requester.lower() not in seen:  # a ticket made without a requester row
        result.insert(0, Recipient(ticket.requester.lower(), "", ParticipantRole.REQUESTER))
    return result


def _static_reason(
    email: str,
    is_own: Callable[[str], bool],
    is_agent: Callable[[str], bool],
    bouncing: set[str],
    excluded: set[str],
) -> str | None:
    if not _SAFE.match(email):
        return "unsafe"
    if is_own(email):
        return "own_address"
    if is_agent(email):
        return "agent"
    if _NOBODY.match(email.partition("@")[0]):
        return "no_reply"
    if email in bouncing:
        return "bouncing"
    if email in excluded:
        return "actor"
    return None


def _budget_reason(
    session: Session, email: str, ticket_used: int, budget: Budget, now: datetime
) -> str | None:
    if ticket_used >= budget.per_ticket:
        return "budget_ticket"
    if _recipient_used(session, email, budget, now) >= budget.per_recipient:
        return "budget_recipient"
    return None


def _wrote_to_us(session: Session, emails: list[str]) -> set[str]:
    """The addresses with at least one inbound article: people, not names on a CC line."""
    if not emails:
        return set()
    return set(
        session.scalars(
            select(Article.from_addr)
            .where(Article.from_addr.in_(emails), Article.kind == ArticleKind.INBOUND)
            .distinct()
        )
    )


def _stranger_reason(
    session: Session, email: str, ticket_id: int, budget: Budget, now: datetime
) -> str | None:
    """A stranger hears about this ticket if it already did in the window, or if it heard
    about fewer than `stranger_tickets` tickets in it."""
    since = now - timedelta(seconds=budget.stranger_window_seconds)
    tickets = set(
        session.scalars(
            select(OutboxRecipient.ticket_id)
            .where(OutboxRecipient.email == email, OutboxRecipient.created_at > since)
            .distinct()
        )
    )
    if ticket_id in tickets or len(tickets) < budget.stranger_tickets:
        return None
    return "stranger"


def _bouncing(session: Session, emails: list[str]) -> set[str]:
    if not emails:
        return set()
    return set(
        session.scalars(
            select(MailAddress.email).where(
                MailAddress.email.in_(emails), MailAddress.bouncing.is_(True)
            )
        )
    )


def _ticket_used(session: Session, ticket_id: int, budget: Budget | None, now: datetime) -> int:
    if budget is None:
        return 0
    since = now - timedelta(seconds=budget.window_seconds)
    return (
        session.scalar(
            select(func.count())
            .select_from(OutboxRecipient)
            .where(OutboxRecipient.ticket_id == ticket_id, OutboxRecipient.created_at > since)
        )
        or 0
    )


def _recipient_used(session: Session, email: str, budget: Budget, now: datetime) -> int:
    since = now - timedelta(seconds=budget.window_seconds)
    return (
        session.scalar(
            select(func.count())
            .select_from(OutboxRecipient)
            .where(OutboxRecipient.email == email, OutboxRecipient.created_at > since)
        )
        or 0
    )
