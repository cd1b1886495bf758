"""Domain changes that the outside world may react to (the notifier turns some into mail).

The domain records them; it never sends anything itself.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TicketCreated:
    ticket_id: int
    article_id: int


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


Change = TicketCreated | CustomerReplied | StatusChanged
