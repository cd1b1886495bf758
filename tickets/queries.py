"""Read-side queries for the CLI (and later an API): plain dicts, ready to print or dump."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from tickets.errors import TicketNotFound
from tickets.models import Article, RawMessage, RawState, Ticket


def ticket_summary(t: Ticket) -> dict[str, Any]:
    return {
        "number": t.id,
        "subject": t.subject,
        "status": t.status,
        "level": t.level,
        "priority": t.priority,
        "category": t.category,
        "requester": t.requester,
        "assignee": t.assignee,
        "team": t.team,
        "language": t.language,
        "parent": t.parent_id,
        "created_at": t.created_at,
        "updated_at": t.updated_at,
        "first_response_due_at": t.first_response_due_at,
        "resolution_due_at": t.resolution_due_at,
    }


def list_tickets(
    session: Session,
    *,
    status: str | None = None,
    level: int | None = None,
    requester: str | None = None,
    due_before: datetime | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Tickets, newest first; `due_before` keeps those with an SLA due time before it
    (now for breached tickets, now + a window for those due soon)."""
    query = select(Ticket).order_by(Ticket.id.desc()).limit(limit)
    if due_before is not None:
        query = (
            query.where(
                (Ticket.first_response_due_at <= due_before)
                | (Ticket.resolution_due_at <= due_before)
            )
            .order_by(None)
            .order_by(Ticket.resolution_due_at)
        )
    if status:
        query = query.where(Ticket.status == status)
    if level:
        query = query.where(Ticket.level == level)
    if requester:
        query = query.where(Ticket.requester == requester.lower())
    return [ticket_summary(t) for t in session.scalars(query)]


def ticket_detail(session: Session, number: int) -> dict[str, Any]:
    ticket = session.scalar(
        select(Ticket)
        .where(Ticket.id == number)
        .options(
            selectinload(Ticket.articles).selectinload(Article.attachments),
            selectinload(Ticket.participants),
            selectinload(Ticket.events),
        )
    )
    if ticket is None:
        raise TicketNotFound(f"no ticket #{number}")
    return {
        **ticket_summary(ticket),
        "participants": [
            {"email": p.email, "name": p.name, "role": p.role} for p in ticket.participants
        ],
        "articles": [
            {
                "id": a.id,
                "kind": a.kind,
                "message_id": a.message_id,
                "from": a.from_addr,
                "author": a.author,
                "to": a.to_addrs,
                "cc": a.cc_addrs,
                "subject": a.subject,
                "new_text": a.new_text,
                "created_at": a.created_at,
                "attachments": [
                    {
                        "filename": f.filename,
                        "content_type": f.content_type,
                        "size": f.size,
                        "sha256": f.sha256,
                        "inline": f.inline,
                    }
                    for f in a.attachments
                ],
            }
            for a in ticket.articles
        ],
        "events": [
            {
                "at": e.created_at,
                "kind": e.kind,
                "field": e.field,
                "old": e.old_value,
                "new": e.new_value,
                "actor": e.actor,
                "data": e.data,
            }
            for e in ticket.events
        ],
    }


def list_raw(
    session: Session, *, state: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    query = select(RawMessage).order_by(RawMessage.id.desc()).limit(limit)
    if state:
        query = query.where(RawMessage.state == state)
    return [
        {
            "id": r.id,
            "state": r.state,
            "source": r.source,
            "size": r.size,
            "message_id": r.message_id,
            "ticket": r.ticket_id,
            "attempts": r.attempts,
            "reason": r.reason,
            "received_at": r.received_at,
        }
        for r in session.scalars(query)
    ]


def failed_raw_ids(session: Session) -> list[int]:
    return list(
        session.scalars(
            select(RawMessage.id)
            .where(RawMessage.state.in_([RawState.FAILED, RawState.QUARANTINED]))
            .order_by(RawMessage.id)
        )
    )
