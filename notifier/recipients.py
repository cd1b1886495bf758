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
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    CompoundSelect,
    Integer,
    Select,
    String,
    bindparam,
    distinct,
    exists,
    func,
    select,
    union_all,
)
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
    facts = _facts(session, ticket.id, [c.email for c in candidates], budget, now)
    excluded = {e.lower() for e in exclude}
    ticket_used = facts.ticket_used
    for candidate in candidates:
        email = candidate.email
        reason = _static_reason(email, is_own, is_agent, facts.bouncing, excluded)
        if reason is None and budget is not None:
            reason = _budget_reason(facts, email, ticket_used, budget)
            if reason is None and email not in facts.wrote:
                reason = _stranger_reason(facts, email, budget)
        if reason is None:
            selection.allowed.append(candidate)
            ticket_used += 1
        else:
            selection.refused.append(Refusal(email, reason))
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


def _budget_reason(facts: _Facts, email: str, ticket_used: int, budget: Budget) -> str | None:
    if ticket_used >= budget.per_ticket:
        return "budget_ticket"
    if facts.used.get(email, 0) >= budget.per_recipient:
        return "budget_recipient"
    return None


def _stranger_reason(facts: _Facts, email: str, budget: Budget) -> str | None:
    """A stranger hears about this ticket if it already did in the window, or if it heard
    about fewer than `stranger_tickets` tickets in it."""
    if email in facts.heard_of_this or facts.heard_of.get(email, 0) < budget.stranger_tickets:
        return None
    return "stranger"


@dataclass
class _Facts:
    """What the rules need to know from the store about the candidates."""

    bouncing: set[str] = field(default_factory=set)
    wrote: set[str] = field(default_factory=set)  # have an inbound article: people
    ticket_used: int = 0  # mails to anyone about this ticket in the budget window
    used: dict[str, int] = field(default_factory=dict)  # mails to each in the window
    heard_of: dict[str, int] = field(default_factory=dict)  # tickets, stranger window
    heard_of_this: set[str] = field(default_factory=set)  # this ticket, stranger window


def _facts(
    session: Session, ticket_id: int, emails: list[str], budget: Budget | None, now: datetime
) -> _Facts:
    """Every candidate's facts in ONE query (a row per candidate, UNION ALL of scalar
    subqueries): the budget is checked on every automatic mail, so its cost is one round
    trip, not five or more."""
    facts = _Facts()
    if not emails:
        return facts
    params: dict[str, Any] = {f"email_{n}": email for n, email in enumerate(emails)}
    if budget is not None:
        params |= {
            "ticket_id": ticket_id,
            "since": now - timedelta(seconds=budget.window_seconds),
            "stranger_since": now - timedelta(seconds=budget.stranger_window_seconds),
        }
    # A Core statement on the session's connection, not through the ORM's execute; what
    # the session holds unflushed (a bounce's mark) is flushed first, as the ORM would.
    session.flush()
    statement = _facts_statement(len(emails), budget is not None)
    rows = session.connection().execute(statement, params)
    for row in rows.mappings():
        email = row["email"]
        if row["bouncing"]:
            facts.bouncing.add(email)
        if budget is None:
            continue
        facts.ticket_used = int(row["ticket_used"] or 0)
        facts.used[email] = int(row["used"] or 0)
        facts.heard_of[email] = int(row["heard_of"] or 0)
        if row["wrote"]:
            facts.wrote.add(email)
        if row["heard_of_this"]:
            facts.heard_of_this.add(email)
    return facts


# The statement takes its values as parameters: built once per number of candidates,
# not per mail (building it cost more than running it).
_TICKET = bindparam("ticket_id", type_=Integer)
_SINCE = bindparam("since", type_=OutboxRecipient.created_at.type)
_STRANGER_SINCE = bindparam("stranger_since", type_=OutboxRecipient.created_at.type)


@lru_cache(maxsize=64)
def _facts_statement(candidates: int, budget: bool) -> CompoundSelect[Any]:
    return union_all(*(_facts_of(n, budget) for n in range(candidates)))


def _facts_of(n: int, budget: bool) -> Select[Any]:
    sent = OutboxRecipient
    email = bindparam(f"email_{n}", type_=String)
    columns: list[Any] = [
        email.label("email"),
        exists()
        .where(MailAddress.email == email, MailAddress.bouncing.is_(True))
        .label("bouncing"),
    ]
    if budget:
        to_them = (sent.email == email, sent.created_at > _STRANGER_SINCE)
        columns += [
            exists()
            .where(Article.from_addr == email, Article.kind == ArticleKind.INBOUND)
            .label("wrote"),
            _count(func.count(), sent.ticket_id == _TICKET, sent.created_at > _SINCE).label(
                "ticket_used"
            ),
            _count(func.count(), sent.email == email, sent.created_at > _SINCE).label("used"),
            _count(func.count(distinct(sent.ticket_id)), *to_them).label("heard_of"),
            exists().where(*to_them, sent.ticket_id == _TICKET).label("heard_of_this"),
        ]
    return select(*columns)


def _count(what: Any, *where: Any) -> Any:
    return select(what).select_from(OutboxRecipient).where(*where).scalar_subquery()
