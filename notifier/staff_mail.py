"""Mail to agents about their tickets: a new ticket, a customer's reply, an assignment, an
escalation, and an agent mail that could not be applied.

Who hears what (seed 001: escalating "alerts the office staff"):

| change | to |
|---|---|
| new ticket | its team (its addresses and agents), else triage, else every agent |
| customer reply | the assignee, else the team, else triage |
| assignment | the new assignee (with the note); a reassignment also tells the previous one |
| team change | the team |
| escalation | the new team, with the reason and the type |
| refused agent mail | that agent only |

Each agent gets a mail of their own, whose Reply-To is an agent reply address made for
them (`tickets.agent_mail`): answering it is how an agent answers the customer. The
agent who caused a change is not told of it. Customers never receive these mails (any
requester or watcher is dropped) and they are no article of the customer's thread;
they are not counted in the customers' send budget. They carry the ticket's subject and
thread headers, so the agent's client shows one conversation per ticket too.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from notifier.compose import AUTO_GENERATED, Draft, Mailbox
from notifier.mail import Queued, identify, queue_mail, safely
from notifier.notify import NotifySettings
from notifier.planned import plan_mail
from parsers.thread_keys import subject_tag
from tickets import search
from tickets.addresses import is_own
from tickets.agent_mail import agent_reply_address
from tickets.changes import (
    AgentMailRefused,
    Assigned,
    Change,
    CustomerReplied,
    Escalated,
    TicketCreated,
)
from tickets.facts import ticket_facts
from tickets.models import Article, ArticleKind, ParticipantRole, Ticket

log = logging.getLogger("buzon.notify")


@dataclass(frozen=True)
class StaffDirectory:
    """The agents and teams of the configuration, as mail needs them."""

    agents: Mapping[str, str] = field(default_factory=dict)  # address → name
    agent_teams: Mapping[str, Sequence[str]] = field(default_factory=dict)  # address → teams
    teams: Mapping[str, Sequence[str]] = field(default_factory=dict)  # team → addresses
    triage: Sequence[str] = ()
    language: str = "es"
    # Exact support addresses and aliases (not support_domains: agents share it).
    own_addresses: frozenset[str] = frozenset()

    def team(self, name: str | None) -> list[str]:
        """A team's addresses and its agents; [] for no team or an unknown one."""
        if not name:
            return []
        wanted = name.lower()
        found = [a for team, addresses in self.teams.items() if team.lower() == wanted
                 for a in addresses]  # fmt: skip
        found += [a for a, teams in self.agent_teams.items() if wanted in map(str.lower, teams)]
        return list(dict.fromkeys(found))

    def fallback(self) -> list[str]:
        """Nobody owns the ticket yet: triage, else every agent (a small desk)."""
        return list(self.triage) or list(self.agents)

    def owner(self, ticket: Ticket) -> list[str]:
        if ticket.assignee and "@" in ticket.assignee:
            return [ticket.assignee]
        return self.team(ticket.team) or self.fallback()


@dataclass(frozen=True)
class Notice:
    """One staff mail: what it says (`event` of the staff_notice template) and to whom."""

    event: str
    recipients: tuple[str, ...]
    article_id: int | None = None
    note: str | None = None
    escalation_type: str | None = None
    actor: str | None = None
    errors: tuple[str, ...] = ()
    answer: bool = False


def notices_for(
    session: Session, ticket: Ticket, change: Change, staff: StaffDirectory
) -> list[Notice]:
    """The staff mails one change calls for (none for most)."""
    if isinstance(change, TicketCreated):
        recipients = staff.team(ticket.team) or staff.fallback()
        return [Notice("new", tuple(recipients), change.article_id)]
    if isinstance(change, CustomerReplied):
        return [_customer_reply(session, ticket, change, staff)]
    if isinstance(change, Assigned):
        return _assigned(ticket, change, staff)
    if isinstance(change, Escalated):
        recipients = staff.team(change.team) or staff.fallback()
        return [Notice("escalated", tuple(recipients), note=change.reason,
                       escalation_type=change.escalation_type, actor=change.actor)]  # fmt: skip
    if isinstance(change, AgentMailRefused):
        return [Notice("agent_refused", (change.agent,), errors=change.errors)]
    return []


def _customer_reply(
    session: Session, ticket: Ticket, change: CustomerReplied, staff: StaffDirectory
) -> Notice:
    article = session.get(Article, change.article_id)
    sender = (article.from_addr or "").lower() if article else ""
    recipients = staff.owner(ticket)
    if sender in staff.agents:
        # An agent's From without an agent reply address: kept as the customer's mail.
        # The agent hears of it (they may have answered the wrong mail).
        recipients = [*recipients, sender]
    return Notice("customer_reply", tuple(recipients), change.article_id, answer=True)


def _assigned(ticket: Ticket, change: Assigned, staff: StaffDirectory) -> list[Notice]:
    notices = []
    if change.assignee and change.assignee != change.previous and "@" in change.assignee:
        notices.append(Notice("assigned", (change.assignee,), note=change.note,
                              actor=change.actor))  # fmt: skip
        if change.previous and "@" in change.previous:
            notices.append(Notice("reassigned", (change.previous,), note=change.note,
                                  actor=change.actor))  # fmt: skip
    elif change.team_changed and change.team:
        notices.append(Notice("team", tuple(staff.team(change.team)), actor=change.actor))
    return notices


class StaffNotifier:
    def __init__(self, settings: NotifySettings, staff: StaffDirectory):
        self.settings = settings
        self.staff = staff

    def notify(self, session: Session, changes: list[Change], now: datetime) -> list[Queued]:
        """Inside the change's transaction (the desk's after_change): one mail per agent."""
        done: list[Queued] = []
        told: set[tuple[int, str]] = set()  # one mail per agent per ticket per action
        for change in changes:
            ticket = session.get(Ticket, change.ticket_id)
            if ticket is None:
                continue
            for notice in notices_for(session, ticket, change, self.staff):
                for email in self._recipients(ticket, notice):
                    if (ticket.id, email) in told:
                        continue
                    told.add((ticket.id, email))
                    build = partial(self._queue, session, ticket, notice, email, now)
                    queued = safely(session, ticket, f"staff_{notice.event}", build)
                    if queued is not None:
                        done.append(queued)
        return done

    def _recipients(self, ticket: Ticket, notice: Notice) -> list[str]:
        """Staff only: never a customer of the ticket, never our own address, never the
        agent who made the change."""
        customers = {p.email for p in ticket.participants if p.role != ParticipantRole.AGENT}
        customers.add(ticket.requester.lower())
        if notice.event != "agent_refused":
            customers -= set(self.staff.agents)  # an agent CC'd on a ticket is still staff
        skip = customers | {(notice.actor or "").lower()}
        wanted = dict.fromkeys(a.lower() for a in notice.recipients)
        return [
            a for a in wanted
            if a not in skip and not is_own(a, self.staff.own_addresses)
        ]  # fmt: skip

    def _queue(
        self, session: Session, ticket: Ticket, notice: Notice, email: str, now: datetime
    ) -> Queued:
        s = self.settings
        kind = "agent_refused" if notice.event == "agent_refused" else "staff_notice"
        reply_to = agent_reply_address(s.sender.email, s.secret, ticket.id, email)
        context = self._context(session, ticket, notice, email, reply_to)
        mail = identify(session, ticket, s.subject_tag, s.secret, s.domain, now,
                        answer=notice.answer)  # fmt: skip
        references = _thread(session, ticket)
        draft = Draft(
            subject=mail.subject,
            body="",  # rendered at delivery, from the template and its data
            sender=s.sender,
            to=[Mailbox(email, self.staff.agents.get(email, ""))],
            reply_to=Mailbox(reply_to, s.sender.name),
            in_reply_to=references[-1] if references else None,
            references=references,
            auto_submitted=AUTO_GENERATED,
            language=self.staff.language,
            thread_topic=mail.thread_topic,
            thread_index=mail.thread_index,
        )
        return queue_mail(
            session, ticket, plan_mail(draft, now, template=(self.staff.language, kind, context)),
            kind=f"staff_{notice.event}",
            message_id=mail.message_id, mail_from=s.sender.email, recipients=[email],
            article_id=None, automatic=False, now=now, internal=True,
        )  # fmt: skip

    def _context(
        self, session: Session, ticket: Ticket, notice: Notice, email: str, reply_to: str
    ) -> dict[str, Any]:
        s = self.settings
        article = session.get(Article, notice.article_id) if notice.article_id else None
        return ticket_facts(ticket) | {
            "event": notice.event,
            "tag": subject_tag(s.subject_tag, ticket.id),
            "assignee_display": s.agent_display(ticket.assignee),
            "author_display": _author(article),
            "actor_display": s.agent_display(notice.actor) if notice.actor else "",
            "text": (article.new_text or article.text or "").strip() if article else "",
            "attachments": [f.filename for f in article.attachments] if article else [],
            "note": notice.note or "",
            "escalation_type": notice.escalation_type or "",
            # Seed 003: "already reported?" — the requester's open tickets, close ones.
            "similar": search.similar(session, ticket) if notice.event == "new" else None,
            "unbound": bool(article and (article.from_addr or "").lower() in self.staff.agents),
            "errors": list(notice.errors),
            "support_address": s.sender.email,
            "agent_address": email,
            "reply_address": reply_to,
            "from_name": s.sender.name,
            "automatic": True,
        }


def _author(article: Article | None) -> str:
    if article is None:
        return ""
    if article.from_name and article.from_addr:
        return f"{article.from_name} <{article.from_addr}>"
    return article.from_addr or article.author or ""


def _thread(session: Session, ticket: Ticket) -> list[str]:
    """The customer thread's Message-IDs, oldest first: the agent's mail continues it."""
    query = (
        select(Article.message_id)
        .where(
            Article.ticket_id == ticket.id,
            Article.kind != ArticleKind.NOTE,
            Article.message_id.is_not(None),
        )
        .order_by(Article.id)
    )
    return [mid for mid in session.scalars(query) if mid]
