"""What the domain needs to know of the configuration, as plain values."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tickets.addresses import is_own


@dataclass(frozen=True)
class MailPolicy:
    own_addresses: frozenset[str]
    secret: bytes
    attachments_dir: Path
    support_domains: frozenset[str] = frozenset()
    agents: frozenset[str] = frozenset()
    subject_tag: str = "[#{number}]"
    tag_requires_participant: bool = True
    honour_reply_to: bool = False
    default_language: str = "es"
    max_attempts: int = 3
    instance: str = "buzon"

    def is_own(self, email: str) -> bool:
        return is_own(email, self.own_addresses, self.support_domains)

    def is_agent(self, email: str) -> bool:
        return email.lower() in self.agents
