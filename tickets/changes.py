"""Domain changes that the outside world may react to (the notifier turns some into mail).

The domain records them; it never sends anything itself. Changes marked internal in
their docstring are never shown to customers: the notifier ignores them, other hooks
(SLA clocks) still see them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TicketCreated:
    ticket_id: int
    article_id: int
    # False: open quietly, no acknowledgement to the customer (a routing rule, a backfill
    # of old mail, an agent registering a call who says so).
    acknowledge: bool = True


@dataclass(frozen=True)
class CustomerReplied:
    ticket_id: int
    article_id: int


@dataclass(frozen=True)
class StatusChanged:
    ticket_id: int
    old: str
    new: str
    actor: str
    # An escalation puts the ticket back to `new` for the target team: a change of
    # hands inside support that customers must not be told about.
    internal: bool = False


@dataclass(frozen=True)
class Assigned:
    """An agent and/or a team took the ticket (the customer hears who handles it)."""

    ticket_id: int
    assignee: str | None
    team: str | None
    actor: str
    previous: str | None = None  # the assignee before (a reassignment when both are set)
    note: str | None = None  # why (seed 001: a reassignment carries a note)
    team_changed: bool = False


@dataclass(frozen=True)
class AgentReplied:
    """A public answer written by an agent; its outbound article is `article_id`."""

    ticket_id: int
    article_id: int
    actor: str


@dataclass(frozen=True)
class Escalated:
    """Internal: moved to the second level (team, reason, type are on the event)."""

    ticket_id: int
    team: str
    escalation_type: str
    actor: str
    reason: str = ""


@dataclass(frozen=True)
class NoteAdded:
    """Internal: a note for agents only."""

    ticket_id: int
    article_id: int
    actor: str


@dataclass(frozen=True)
class PriorityChanged:
    """Internal: impact × urgency gave a new priority (SLA targets follow it)."""

    ticket_id: int
    old: str
    new: str
    actor: str


@dataclass(frozen=True)
class TicketChanged:
    """Internal: a field agents shape (category, participants, requester) changed."""

    ticket_id: int
    field: str
    actor: str


@dataclass(frozen=True)
class Merged:
    """`other` was merged into this ticket: its customers hear it once, from here on."""

    ticket_id: int
    other: int
    actor: str


@dataclass(frozen=True)
class Imported:
    """Internal: this ticket's change came from a backfill or from mail long past; the
    notifier tells nobody of it."""

    ticket_id: int


@dataclass(frozen=True)
class AgentMailRefused:
    """Internal: an agent's mail whose commands were unknown or refused. Nothing of it
    was applied; the agent (only) is told why."""

    ticket_id: int
    agent: str
    errors: tuple[str, ...]
    raw_id: int


Change = (
    TicketCreated
    | CustomerReplied
    | StatusChanged
    | Assigned
    | AgentReplied
    | Escalated
    | NoteAdded
    | PriorityChanged
    | TicketChanged
    | Merged
    | Imported
    | AgentMailRefused
)
