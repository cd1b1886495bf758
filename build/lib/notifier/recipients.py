"""Who may receive a mail about a ticket: the loop rules and the send budget.

The requester and every watcher (CC'd colleagues) are candidates. Refused are: our own
addresses and aliases, agents, no-reply/mailer-daemon/postmaster style addresses,
addresses known to bounce, the person whose own action caused the mail, and, for
automatic mail, anyone over the send budget (per recipient and per ticket, counted
from `outbox_recipients` in a sliding window, across every kind of automatic mail).
Every refusal is returned so that the caller records it in the ticket's history.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tickets.models import MailAddress, OutboxRecipient, ParticipantRole, Ticket

# Local parts that never read mail (RFC 2142 roles, bulk senders' no-reply boxes).
_NOBODY = re.compile(
    r"^(?:no[-_.]?reply|do[-_.]?not[-_.]?reply|donotreply|mailer[-_.]?daemon|postmaster|"
    r"bounces?|listserv|majordomo|auto[-_.]?reply|autoresponder)(?:[-+_.].*)?$",
    re.IGNORECASE,
)
# What we can put in an SMTP envelope and a header without SMTPUTF8: plain ASCII.
_SAFE = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@[A-Za-z0-9.-]{1,253}$")


@dataclass(frozen=True)
class Budget:
    per_recipient: int
    per_ticket: int
    window_seconds: int


@dataclass(frozen=True)
class Recipient:
    email: str
    name: str
    role: str  # requester / watcher


@dataclass(frozen=True)
class Refusal:
    email: str
    reason: str  # own_address / agent / no_reply / bouncing / actor / budget_* / unsafe


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
    for candidate in candidates:
        reason = _static_reason(candidate.email, is_own, is_agent, bouncing, excluded)
        if reason is None and budget is not None:
            if ticket_used >= budget.per_ticket:
                reason = "budget_ticket"
            elif _recipient_used(session, candidate.email, budget, now) >= budget.per_recipient:
                reason = "budget_recipient"
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
