"""From domain changes to outbox rows, inside the transaction that made the changes.

One action, one mail per ticket: a batch of changes is reduced to the single mail that
tells what happened (an acknowledgement, an agent's reply, who handles the ticket, or
the new status), so that "assigned and now in progress" is one mail, not two.
Internal changes (notes, escalations, priority, an escalation's reset to `new`) never
produce mail.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Table, insert, select
from sqlalchemy.orm import Session

from notifier.compose import AUTO_GENERATED, AUTO_REPLIED, Draft, Mailbox
from notifier.mail import ACTOR, Queued, identify, queue_mail, safely
from notifier.planned import plan_mail
from notifier.recipients import Budget, Recipient, Selection, select_recipients
from notifier.render import Renderer
from parsers.thread_keys import plus_address, subject_tag
from tickets.batch import NeedsSavepoint, optimistic
from tickets.changes import (
    AgentReplied,
    Assigned,
    Change,
    Imported,
    Merged,
    StatusChanged,
    TicketCreated,
)
from tickets.lifecycle import record
from tickets.models import Article, ArticleKind, ParticipantRole, Ticket, utcnow
from tickets.survey import SURVEY_KIND

log = logging.getLogger("buzon.notify")


@dataclass(frozen=True)
class NotifySettings:
    sender: Mailbox  # From of every mail; its plus-address is the Reply-To
    secret: bytes
    subject_tag: str
    budget: Budget
    is_own: Callable[[str], bool]
    is_agent: Callable[[str], bool]
    attachments_dir: Path
    # The closing status mail becomes the satisfaction survey (seed 004).
    survey: bool = False
    # address → name of the configured agents: customers read names, not addresses.
    agent_names: Mapping[str, str] = field(default_factory=dict)
    # Support addresses that are queues of their own: address → (From name, signature).
    queues: Mapping[str, tuple[str | None, str | None]] = field(default_factory=dict)

    def sender_for(self, ticket: Ticket) -> Mailbox:
        """The From of mail about `ticket`: its queue's address and name, if it has one."""
        queue = self.queues.get(ticket.queue_address or "")
        if queue is None or ticket.queue_address is None:
            return self.sender
        return Mailbox(ticket.queue_address, queue[0] or self.sender.name)

    def signature_for(self, ticket: Ticket) -> str:
        queue = self.queues.get(ticket.queue_address or "")
        return (queue[1] if queue else None) or self.sender_for(ticket).name

    def agent_display(self, who: str | None) -> str:
        """The name an agent (an address, or a CLI user name) is shown by."""
        if not who:
            return ""
        return self.agent_names.get(who.lower()) or (who.partition("@")[0] if "@" in who else who)

    @property
    def domain(self) -> str:
        return self.sender.email.partition("@")[2]


# An outbound article's INSERT, built once (its values come as parameters): a Core
# statement on the table, which the ORM's bulk machinery would only slow down.
_ARTICLES = Article.__table__
assert isinstance(_ARTICLES, Table)
_INSERT_ARTICLE = insert(_ARTICLES).returning(_ARTICLES.c.id)

# Mails that answer a person's mail carry "Re: " before the ticket's subject.
ANSWERS = frozenset({"acknowledgement", "reply"})


@dataclass(frozen=True)
class Plan:
    """The one mail a batch of changes on a ticket calls for."""

    kind: str  # acknowledgement / reply / assigned / status / survey / reminder
    auto_submitted: str | None
    article_id: int | None = None  # the customer's first mail, or the agent's reply
    status: StatusChanged | None = None
    exclude: frozenset[str] = frozenset()
    merged_from: int | None = None  # the ticket merged into this one


def plan_for(changes: list[Change]) -> Plan | None:
    if any(isinstance(c, Imported) for c in changes):
        return None  # a backfill, or mail from long ago: nobody is told
    created = next((c for c in changes if isinstance(c, TicketCreated)), None)
    if created is not None:
        if not created.acknowledge:
            return None
        return Plan("acknowledgement", AUTO_REPLIED, article_id=created.article_id)
    statuses = [c for c in changes if isinstance(c, StatusChanged) and not c.internal]
    status = None
    if statuses and statuses[0].old != statuses[-1].new:
        status = StatusChanged(
            statuses[-1].ticket_id, statuses[0].old, statuses[-1].new, statuses[-1].actor
        )
    merged = next((c for c in changes if isinstance(c, Merged)), None)
    if merged is not None:
        return Plan("merged", AUTO_GENERATED, merged_from=merged.other)
    replied = next((c for c in changes if isinstance(c, AgentReplied)), None)
    if replied is not None:
        return Plan("reply", None, article_id=replied.article_id, status=status)
    assigned = [c for c in changes if isinstance(c, Assigned)]
    if assigned:
        return Plan("assigned", AUTO_GENERATED, status=status)
    if status is not None:
        # Whoever caused the change (a customer whose reply reopened the ticket) knows it.
        return Plan("status", AUTO_GENERATED, status=status, exclude=frozenset({status.actor}))
    return None


class Notifier:
    def __init__(
        self,
        settings: NotifySettings,
        renderer: Renderer,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.renderer = renderer
        self.clock = clock

    def notify(
        self, session: Session, changes: list[Change], now: datetime | None = None
    ) -> list[Queued]:
        """The mails these changes call for, dated `now` (default: the clock)."""
        now = now or self.clock()
        by_ticket: dict[int, list[Change]] = {}
        for change in changes:
            by_ticket.setdefault(change.ticket_id, []).append(change)
        done = []
        for ticket_id, group in by_ticket.items():
            plan = self._with_survey(plan_for(group))
            ticket = session.get(Ticket, ticket_id) if plan else None
            if plan is None or ticket is None:
                continue
            queued = self._queue_safely(session, ticket, plan, now)
            if queued is not None:
                done.append(queued)
        return done

    def remind(self, session: Session, ticket: Ticket, now: datetime) -> Queued | None:
        """The reminder to a customer whose ticket has waited on them (scheduler)."""
        return self._queue_safely(session, ticket, Plan("reminder", AUTO_GENERATED), now)

    def _with_survey(self, plan: Plan | None) -> Plan | None:
        """With the survey on, the mail saying "closed" also asks for a rating: one mail."""
        if (
            self.settings.survey
            and plan is not None
            and plan.kind == "status"
            and plan.status is not None
            and plan.status.new == "closed"
        ):
            # The survey asks the customer something: it goes to them even when their
            # own confirmation closed the ticket (no echo rule for a question).
            return replace(plan, kind=SURVEY_KIND, exclude=frozenset())
        return plan

    def _queue_safely(
        self, session: Session, ticket: Ticket, plan: Plan, now: datetime
    ) -> Queued | None:
        if not optimistic(session):
            return safely(
                session, ticket, plan.kind, lambda: self._queue(session, ticket, plan, now)
            )
        # A batch's optimistic pass takes no savepoint: a failure sends the batch to its
        # isolated pass, where the savepoint above records it as ever.
        try:
            return self._queue(session, ticket, plan, now)
        except Exception as exc:
            raise NeedsSavepoint(f"mail for ticket={ticket.id} kind={plan.kind}") from exc

    # --- one mail --------------------------------------------------------------------------

    def _queue(self, session: Session, ticket: Ticket, plan: Plan, now: datetime) -> Queued:
        s = self.settings
        automatic = plan.auto_submitted is not None
        selection = select_recipients(
            session,
            ticket,
            is_own=s.is_own,
            is_agent=s.is_agent,
            exclude=plan.exclude,
            budget=s.budget if automatic else None,
            now=now,
        )
        refused = tuple((r.email, r.reason) for r in selection.refused)
        for refusal in selection.refused:
            record(
                session,
                ticket,
                "notify_refused",
                ACTOR,
                field="mail",
                new=plan.kind,
                recipient=refusal.email,
                reason=refusal.reason,
                at=now,
            )
        if not selection.allowed:
            log.info("no recipient for ticket=%s kind=%s", ticket.id, plan.kind)
            return Queued(ticket.id, plan.kind, None, (), refused)

        reply = session.get(Article, plan.article_id) if plan.kind == "reply" else None
        context = self._context(ticket, plan, selection, reply)
        # An agent's reply is its own article: its mail is rendered at delivery. Any other
        # mail is an article of its own, whose text is the rendered body: rendered now.
        body = (
            ""
            if reply is not None
            else self.renderer.render(ticket.language, plan.kind, context).body
        )
        answer = plan.kind in ANSWERS
        mail = identify(session, ticket, s.subject_tag, s.secret, s.domain, now, answer=answer)
        in_reply_to, references = self._thread(session, ticket, plan, reply)
        to, *cc = [Mailbox(r.email, r.name) for r in selection.allowed]
        base = s.sender_for(ticket)
        sender = base
        if reply is not None and reply.author:
            # "Lucía Romero (Soporte)" <soporte@…>: the customer sees who answered, and
            # still answers the support address.
            sender = Mailbox(base.email, f"{s.agent_display(reply.author)} ({base.name})")
        draft = Draft(
            subject=mail.subject,
            body=body,
            sender=sender,
            to=[to],
            cc=cc,
            reply_to=Mailbox(plus_address(base.email, s.secret, ticket.id), base.name),
            in_reply_to=in_reply_to,
            references=references,
            auto_submitted=plan.auto_submitted,
            language=ticket.language,
            thread_topic=mail.thread_topic,
            thread_index=mail.thread_index,
        )
        letter = plan_mail(
            draft,
            now,
            template=(ticket.language, plan.kind, context) if reply is not None else None,
            attachments=[(f.filename, f.content_type, f.sha256) for f in reply.attachments]
            if reply is not None
            else (),
        )
        addressed = {
            "message_id": mail.message_id,
            "from_addr": sender.email,
            "from_name": sender.name,
            "to_addrs": [to.email],
            "cc_addrs": [m.email for m in cc],
            "subject": mail.subject,
        }
        if reply is None:
            # Its own article, by INSERT..RETURNING its id: nothing reads it back as an
            # object, and no unit of work is flushed for it.
            own = {
                "ticket_id": ticket.id,
                "kind": ArticleKind.OUTBOUND,
                "author": ACTOR,
                "text": body,
                "new_text": body,
                "created_at": now,
            }
            article_id = session.connection().execute(_INSERT_ARTICLE, own | addressed).scalar_one()
        else:
            for key, value in addressed.items():
                setattr(reply, key, value)
            session.flush()
            article_id = reply.id
        return queue_mail(
            session,
            ticket,
            letter,
            kind=plan.kind,
            message_id=mail.message_id,
            mail_from=base.email,
            recipients=[r.email for r in selection.allowed],
            article_id=article_id,
            automatic=automatic,
            now=now,
            refused=refused,
        )

    def _context(
        self, ticket: Ticket, plan: Plan, selection: Selection, reply: Article | None
    ) -> dict[str, Any]:
        requester: Recipient | None = next(
            (r for r in selection.allowed if r.role == "requester"), None
        )
        colleagues = [r.name or r.email for r in selection.allowed if r.role != "requester"]
        actor = plan.status.actor if plan.status else ""
        return {
            "number": ticket.id,
            "tag": subject_tag(self.settings.subject_tag, ticket.id),
            "subject": ticket.subject,
            "status": ticket.status,
            "status_changed": plan.status is not None,
            "old_status": plan.status.old if plan.status else "",
            "requester_name": requester.name if requester else "",
            # Colleagues in copy are addressed as colleagues, not as the requester.
            "to_requester": requester is not None,
            "requester_display": _person(ticket, ticket.requester),
            "colleague_names": ", ".join(colleagues),
            # A status the customer's own reply caused is told as such, not as an agent's.
            "by_customer": _is_customer(ticket, actor),
            "actor_display": _person(ticket, actor),
            "assignee": self.settings.agent_display(ticket.assignee),
            "team": ticket.team,
            "from_name": self.settings.signature_for(ticket),
            "automatic": plan.auto_submitted is not None,
            "reply_text": reply.text if reply else "",
            "attachments": [f.filename for f in reply.attachments] if reply else [],
            "merged_from": subject_tag(self.settings.subject_tag, plan.merged_from)
            if plan.merged_from is not None
            else None,
        }

    def _thread(
        self, session: Session, ticket: Ticket, plan: Plan, reply: Article | None
    ) -> tuple[str | None, list[str]]:
        """In-Reply-To the latest mail of the thread (for an acknowledgement: the
        customer's mail itself); References from the first mail to it."""
        acknowledged = plan.article_id if plan.kind == "acknowledgement" else None
        if acknowledged is not None:
            # The ticket was opened by this very article (TicketCreated), in this
            # transaction: it is the whole thread so far, in the session already.
            first = session.get(Article, acknowledged)
            if first is not None and first.ticket_id == ticket.id:
                return first.message_id, [first.message_id] if first.message_id else []
        query = (
            select(Article.id, Article.message_id)
            .where(
                Article.ticket_id == ticket.id,
                Article.kind != ArticleKind.NOTE,
                Article.message_id.is_not(None),
            )
            .order_by(Article.id)
        )
        if acknowledged is not None:
            query = query.where(Article.id <= acknowledged)
        if reply is not None:
            query = query.where(Article.id != reply.id)
        ids = [mid for _, mid in session.execute(query) if mid]
        return (ids[-1] if ids else None), ids


def _person(ticket: Ticket, email: str) -> str:
    """A participant's name as the ticket knows it, else the address."""
    for person in ticket.participants:
        if person.email == (email or "").lower() and person.name:
            return person.name
    return email


def _is_customer(ticket: Ticket, email: str) -> bool:
    email = (email or "").lower()
    return any(p.email == email and p.role != ParticipantRole.AGENT for p in ticket.participants)
