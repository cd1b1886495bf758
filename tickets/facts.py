"""A ticket's facts as the messages about it carry them (webhook payloads, staff mail):
one shape, so that a receiver and an agent read the same names."""

from __future__ import annotations

from typing import Any

from tickets.models import Ticket


def ticket_facts(ticket: Ticket) -> dict[str, Any]:
    return {
        "number": ticket.id,
        "subject": ticket.subject,
        "status": ticket.status,
        "priority": ticket.priority,
        "level": ticket.level,
        "team": ticket.team,
        "assignee": ticket.assignee,
        "requester": ticket.requester,
    }
