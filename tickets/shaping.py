"""Agents shaping tickets: open one for a phone call or a chat (seeds 002/003), set the
category, change the requester, merge two tickets (CC'd people: `actions.add_watcher`).

Like `tickets.actions`: a session in, history events written, changes out; the desk
adds the SLA clocks and the mail in the same transaction.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tickets.actions import email_address
from tickets.changes import Change, Merged, TicketChanged, TicketCreated
from tickets.errors import TicketError
from tickets.lifecycle import Status, change_status, record
from tickets.models import (
    Article,
    ArticleKind,
    OutboxMessage,
    Participant,
    ParticipantRole,
    Ticket,
    utcnow,
)

SOURCES = ("phone", "chat", "visit", "mail")


def open_ticket(
    session: Session,
    actor: str,
    *,
    requester: str,
    subject: str,
    text: str,
    cc: tuple[str, ...] = (),
    source: str = "phone",
    language: str = "es",
    acknowledge: bool = True,
) -> list[Change]:
    """A ticket an agent registers for a request that did not come by mail."""
    requester = email_address(requester)
    if source not in SOURCES:
        raise TicketError(f"unknown source {source!r}; one of: {', '.join(SOURCES)}")
    subject = " ".join(subject.split())
    if not subject:
        raise TicketError("a ticket needs a subject")
    ticket = Ticket(
        subject=subject[:2000], status=Status.NEW.value, requester=requester, language=language
    )
    session.add(ticket)
    session.flush()
    session.add(Participant(ticket=ticket, email=requester, role=ParticipantRole.REQUESTER))
    for email in dict.fromkeys(email_address(a) for a in cc):
        if email != requester:
            session.add(Participant(ticket=ticket, email=email, role=ParticipantRole.WATCHER))
    article = Article(
        ticket=ticket,
        kind=ArticleKind.INBOUND,
        from_addr=requester,
        subject=subject,
        text=text,
        new_text=text,
        author=actor,  # who wrote it down
    )
    session.add(article)
    session.flush()
    record(session, ticket, "created", actor, source=source, registered_by=actor)
    return [TicketCreated(ticket.id, article.id, acknowledge=acknowledge)]


def set_category(session: Session, ticket: Ticket, actor: str, category: str) -> list[Change]:
    if ticket.category == category:
        raise TicketError(f"ticket #{ticket.id} is already in category {category}")
    record(session, ticket, "category", actor, field="category", old=ticket.category,
           new=category)  # fmt: skip
    ticket.category = category
    ticket.updated_at = utcnow()
    return [TicketChanged(ticket.id, "category", actor)]


def set_requester(session: Session, ticket: Ticket, actor: str, address: str) -> list[Change]:
    """The request is someone else's (a colleague wrote for a patient): they become the
    requester; the previous one stays on the ticket as a CC'd person."""
    email = email_address(address)
    if email == ticket.requester:
        raise TicketError(f"{email} is already the requester of ticket #{ticket.id}")
    old = _participant(session, ticket, ticket.requester)
    if old is not None:
        old.role = ParticipantRole.WATCHER
    new = _participant(session, ticket, email)
    if new is None:
        session.add(Participant(ticket=ticket, email=email, role=ParticipantRole.REQUESTER))
    else:
        new.role = ParticipantRole.REQUESTER
    record(session, ticket, "requester", actor, field="requester", old=ticket.requester,
           new=email)  # fmt: skip
    ticket.requester = email
    ticket.updated_at = utcnow()
    return [TicketChanged(ticket.id, "requester", actor)]


def _participant(session: Session, ticket: Ticket, email: str) -> Participant | None:
    return session.scalar(
        select(Participant).where(Participant.ticket_id == ticket.id, Participant.email == email)
    )


def merge(session: Session, survivor: Ticket, actor: str, other_number: int) -> list[Change]:
    """Two tickets about one case: `other`'s articles, people and Message-IDs move to the
    survivor (so a later reply to either lands here); `other` is closed with a link."""
    if other_number == survivor.id:
        raise TicketError("a ticket cannot be merged into itself")
    other = session.get(Ticket, other_number, with_for_update=True)
    if other is None:
        raise TicketError(f"no ticket #{other_number}")
    if other.merged_into_id is not None:
        raise TicketError(f"ticket #{other.id} was already merged into #{other.merged_into_id}")
    session.execute(
        update(Article).where(Article.ticket_id == other.id).values(ticket_id=survivor.id)
    )
    session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.ticket_id == other.id)
        .values(ticket_id=survivor.id)
    )
    _move_people(session, other, survivor)
    now = utcnow()
    record(session, survivor, "merged", actor, field="merged", new=other.id, at=now)
    record(session, other, "merged", actor, field="merged_into", new=survivor.id, at=now)
    other.merged_into_id = survivor.id
    changes: list[Change] = []
    if other.status != Status.CLOSED:
        changes += change_status(session, other, Status.CLOSED, actor, internal=True, now=now,
                                 note=f"merged into #{survivor.id}")  # fmt: skip
    survivor.updated_at = now
    session.expire(survivor, ["articles", "participants"])
    return [*changes, Merged(survivor.id, other.id, actor)]


def _move_people(session: Session, other: Ticket, survivor: Ticket) -> None:
    known = {p.email for p in survivor.participants}
    for person in list(other.participants):
        if person.email not in known:
            session.add(
                Participant(
                    ticket=survivor,
                    email=person.email,
                    name=person.name,
                    role=ParticipantRole.WATCHER
                    if person.role == ParticipantRole.REQUESTER
                    else person.role,
                )
            )
            known.add(person.email)
