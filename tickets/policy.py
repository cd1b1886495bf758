"""What the domain needs to know of the configuration, as plain values."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


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
    categories: tuple[str, ...] = field(default=())

    def is_own(self, email: str) -> bool:
        local, _, domain = email.lower().partition("@")
        base = local.split("+", 1)[0] + "@" + domain
        return base in self.own_addresses or domain in self.support_domains

    def is_agent(self, email: str) -> bool:
        return email.lower() in self.agents

    @property
    def domain(self) -> str:
        return sorted(self.own_addresses)[0].partition("@")[2]
