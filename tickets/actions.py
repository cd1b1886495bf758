"""What agents do to a ticket: status, assignment, escalation, notes, replies, priority.

Pure domain: a session and a ticket in, history events written, changes out. Nothing
here sends mail; the caller hands the changes to the notifier in the same transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session

from tickets.blobstore import BlobStore
from tickets.changes import (
    AgentReplied,
    Assigned,
    Change,
    Escalated,
    NoteAdded,
    PriorityChanged,
)
from tickets.errors import TicketError, TicketNotFound
from tickets.lifecycle import Status, change_status, record
from tickets.models import (
    Article,
    ArticleKind,
    AttachmentFile,
    Participant,
    ParticipantRole,
    Ticket,
    utcnow,
)
from tickets.priority import PriorityMatrix

# Seed 001's escalation types, which are also the ticket categories (DESIGN.md).
DEFAULT_CATEGORIES = (
    "urgent_emergency",  # pain and/or bleeding: someone must call as soon as possible
    "complaint",
    "appointment",
    "purchases_services",
    "general",
    "billing",
)


@dataclass(frozen=True)
class Catalogue:
    """The configurable names agents choose from."""

    categories: tuple[str, ...] = DEFAULT_CATEGORIES
    teams: tuple[str, ...] = ()  # empty: any team name is accepted
    matrix: PriorityMatrix = field(default_factory=PriorityMatrix)
    # address → name of the configured agents; empty: any assignee is accepted. When
    # agents are configured only they can be assigned (seed 000: not everyone is in the
    # help desk, and a ticket given to someone outside it goes unanswered).
    agents: Mapping[str, str] = field(default_factory=dict)

    def agent(self, value: str) -> str:
        """The assignee for `value` (an agent's address or name): the address when agents
        are configured."""
        name = " ".join(value.split())
        if not name:
            raise TicketError("an agent is needed")
        if not self.agents:
            return name
        wanted = name.lower()
        for address, display in self.agents.items():
            if wanted in (address.lower(), display.lower()):
                return address
        raise TicketError(f"unknown agent {value!r}; one of: {', '.join(self.agents)}")

    def category(self, value: str) -> str:
        name = value.strip().lower().replace("-", "_").replace(" ", "_")
        if name not in self.categories:
            raise TicketError(f"unknown type {value!r}; one of: {', '.join(self.categories)}")
        return name

    def team(self, value: str) -> str:
        name = " ".join(value.split())
        if not name:
            raise TicketError("a team name is needed")
        if self.teams:
            by_lower = {t.lower(): t for t in self.teams}
            if name.lower() not in by_lower:
                raise TicketError(f"unknown team {value!r}; one of: {', '.join(self.teams)}")
            return by_lower[name.lower()]
        return name


@dataclass(frozen=True)
class NewAttachment:
    filename: str
    content_type: str
    payload: bytes


def load_ticket(session: Session, number: int) -> Ticket:
    """The ticket, locked for this transaction (no lost updates between two agents)."""
    ticket = session.get(Ticket, number, with_for_update=True)
    if ticket is None:
        raise TicketNotFound(f"no ticket #{number}")
    return ticket


def set_status(
    session: Session, ticket: Ticket, status: str, actor: str, note: str | None = None
) -> list[Change]:
    changes = change_status(session, ticket, status, actor, note=_clean(note) or None)
    ticket.updated_at = utcnow()
    return changes


def assign(
    session: Session,
    ticket: Ticket,
    actor: str,
    *,
    agent: str | None = None,
    team: str | None = None,
    catalogue: Catalogue | None = None,
    note: str | None = None,
) -> list[Change]:
    """Give the ticket to an agent and/or a team. An agent taking a `new` ticket puts it
    `in_progress` ("En curso: un agente ha tomado la solicitud", seed 002). Taking it
    from another agent needs a note saying why, stamped with the new assignee's name
    (seed 001: "Reassign requires a note")."""
    catalogue = catalogue or Catalogue()
    agent = catalogue.agent(agent) if agent else None
    team = catalogue.team(team) if team else None
    if agent is None and team is None:
        raise TicketError("give an agent, a team or both")
    _refuse_finished(ticket, "assign")
    if (agent is None or agent == ticket.assignee) and (team is None or team == ticket.team):
        raise TicketError(f"ticket #{ticket.id} is already assigned so")
    previous, old_team, note = ticket.assignee, ticket.team, _clean(note) or None
    if agent is not None and previous is not None and agent != previous and note is None:
        raise TicketError(
            f"ticket #{ticket.id} is assigned to {previous}: reassigning needs a note saying why"
        )
    now = utcnow()
    if agent is not None:
        _set(session, ticket, "assignee", agent, actor, now)
    if team is not None:
        _set(session, ticket, "team", team, actor, now)
    if note is not None:
        who = catalogue.agents.get(agent or "", agent or team or "")
        _note(session, ticket, actor, f"Asignado a {who}: {note}", now)
    changes: list[Change] = [
        Assigned(
            ticket.id, ticket.assignee, ticket.team, actor, previous=previous, note=note,
            team_changed=ticket.team != old_team,
        )  # fmt: skip
    ]
    if agent is not None and ticket.status == Status.NEW:
        changes += change_status(session, ticket, Status.IN_PROGRESS, actor, now=now)
    ticket.updated_at = now
    return changes


def escalate(
    session: Session,
    ticket: Ticket,
    actor: str,
    *,
    team: str,
    reason: str,
    escalation_type: str,
    catalogue: Catalogue | None = None,
) -> list[Change]:
    """Second level (seed 000): the target team gets the ticket as `new`, unassigned, with
    an internal note carrying the reason. Customers are not told of it."""
    catalogue = catalogue or Catalogue()
    team = catalogue.team(team)
    kind = catalogue.category(escalation_type)
    reason = _clean(reason)
    if not reason:
        raise TicketError("an escalation needs a reason (--reason)")
    _refuse_finished(ticket, "escalate")
    now = utcnow()
    record(
        session,
        ticket,
        "escalation",
        actor,
        team=team,
        reason=reason,
        type=kind,
        from_level=ticket.level,
        from_team=ticket.team,
        at=now,
    )
    _set(session, ticket, "level", 2, actor, now)
    _set(session, ticket, "team", team, actor, now)
    _set(session, ticket, "assignee", None, actor, now)  # the target team picks it up
    _set(session, ticket, "category", kind, actor, now)
    note = _note(session, ticket, actor, f"Escalado a {team} ({kind}): {reason}", now)
    changes: list[Change] = [Escalated(ticket.id, team, kind, actor, reason=reason)]
    if ticket.status != Status.NEW:
        changes += change_status(session, ticket, Status.NEW, actor, internal=True, now=now)
    changes.append(NoteAdded(ticket.id, note.id, actor))
    ticket.updated_at = now
    return changes


def _set(
    session: Session, ticket: Ticket, name: str, value: object, actor: str, now: datetime
) -> None:
    """Change one field of the ticket, with its history event; nothing when unchanged."""
    old = getattr(ticket, name)
    if old == value:
        return
    record(session, ticket, name, actor, field=name, old=old, new=value, at=now)
    setattr(ticket, name, value)


def add_note(session: Session, ticket: Ticket, actor: str, text: str) -> list[Change]:
    """An internal note: in the thread for agents, never mailed."""
    text = _clean(text)
    if not text:
        raise TicketError("the note is empty")
    note = _note(session, ticket, actor, text, utcnow())
    return [NoteAdded(ticket.id, note.id, actor)]


def reply(
    session: Session,
    ticket: Ticket,
    actor: str,
    text: str,
    *,
    attachments: Sequence[NewAttachment] = (),
    blobs: BlobStore | None = None,
    status: str | None = None,
) -> list[Change]:
    """A public answer from an agent; the notifier mails it from the outbound article."""
    text = text.strip("\n")
    if not text.strip():
        raise TicketError("the reply is empty")
    if ticket.status == Status.CLOSED:
        raise TicketError(f"ticket #{ticket.id} is closed; it cannot be answered")
    if attachments and blobs is None:
        raise TicketError("attachments need a blob store")
    now = utcnow()
    article = Article(
        ticket=ticket,
        kind=ArticleKind.OUTBOUND,
        author=actor,
        text=text,
        new_text=text,
        subject=ticket.subject,
        created_at=now,
    )
    for item in attachments:
        assert blobs is not None
        article.attachments.append(
            AttachmentFile(
                sha256=blobs.put(item.payload),
                filename=item.filename[:255],
                content_type=item.content_type[:255],
                size=len(item.payload),
            )
        )
    session.add(article)
    session.flush()
    record(session, ticket, "article", actor, field="reply", new=article.id, at=now)
    if ticket.first_response_at is None:
        ticket.first_response_at = now
    changes: list[Change] = [AgentReplied(ticket.id, article.id, actor)]
    if status is not None and status != ticket.status:
        changes += change_status(session, ticket, status, actor, now=now)
    ticket.updated_at = now
    return changes


def set_priority(
    session: Session,
    ticket: Ticket,
    actor: str,
    *,
    impact: str,
    urgency: str,
    matrix: PriorityMatrix | None = None,
) -> list[Change]:
    impact, urgency, priority = (matrix or PriorityMatrix()).priority(impact, urgency)
    now = utcnow()
    for name, value in (("impact", impact), ("urgency", urgency)):
        if getattr(ticket, name) != value:
            record(
                session,
                ticket,
                name,
                actor,
                field=name,
                old=getattr(ticket, name),
                new=value,
                at=now,
            )
            setattr(ticket, name, value)
    if priority == ticket.priority:
        return []
    old = ticket.priority
    record(session, ticket, "priority", actor, field="priority", old=old, new=priority, at=now)
    ticket.priority = priority
    ticket.updated_at = now
    return [PriorityChanged(ticket.id, old, priority, actor)]


def add_watcher(
    session: Session, ticket: Ticket, actor: str, email: str, name: str = ""
) -> list[Change]:
    """Copy someone on the ticket: they receive its updates from now on."""
    email = email_address(email)
    if any(p.email == email for p in ticket.participants):
        raise TicketError(f"{email} is already on ticket #{ticket.id}")
    session.add(
        Participant(ticket=ticket, email=email, name=name[:300], role=ParticipantRole.WATCHER)
    )
    record(session, ticket, "participant", actor, field="watcher", new=email)
    session.flush()
    return []  # nothing to mail: the new watcher hears of the next update


def remove_watcher(session: Session, ticket: Ticket, actor: str, email: str) -> list[Change]:
    """Stop copying a watcher (never the requester: the ticket is theirs)."""
    email = email_address(email)
    found = [p for p in ticket.participants if p.email == email]
    if not found:
        raise TicketError(f"{email} is not on ticket #{ticket.id}")
    if any(p.role == ParticipantRole.REQUESTER for p in found) or email == ticket.requester:
        raise TicketError(f"{email} is the requester of ticket #{ticket.id}; cannot remove")
    for person in found:
        ticket.participants.remove(person)
        session.delete(person)
    record(session, ticket, "participant", actor, field="watcher", old=email)
    session.flush()
    return []


def email_address(value: str) -> str:
    """An address as typed by an agent, normalised; refused when it is none."""
    email = value.strip().strip("<>").lower()
    local, at, domain = email.partition("@")
    if not at or not local or "." not in domain or any(c.isspace() for c in email):
        raise TicketError(f"not an email address: {value!r}")
    return email


def _note(session: Session, ticket: Ticket, actor: str, text: str, now: datetime) -> Article:
    note = Article(
        ticket=ticket,
        kind=ArticleKind.NOTE,
        author=actor,
        text=text,
        new_text=text,
        created_at=now,
    )
    session.add(note)
    session.flush()
    record(session, ticket, "note", actor, field="note", new=note.id, at=now)
    return note


def _refuse_finished(ticket: Ticket, what: str) -> None:
    if ticket.status == Status.RESOLVED:
        raise TicketError(
            f"cannot {what} ticket #{ticket.id}: it is resolved (move it to in_progress first)"
        )
    if ticket.status == Status.CLOSED:
        raise TicketError(f"cannot {what} ticket #{ticket.id}: it is closed")


def _clean(text: str | None) -> str:
    return (text or "").strip()
