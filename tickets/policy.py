"""What the domain needs to know of the configuration, as plain values."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tickets.actions import Catalogue
from tickets.addresses import is_own


@dataclass(frozen=True)
class AgentMailPolicy:
    """What agent mail needs of the configuration (invariant 9)."""

    # Bound addresses other than an agent's own that an agent may act through: a team
    # address → the configured agents of that team.
    team_members: Mapping[str, frozenset[str]] = field(default_factory=dict)
    # The names agents choose from, for the #commands.
    catalogue: Catalogue = field(default_factory=Catalogue)
    # Also require a DKIM or DMARC pass stamped by one of these servers.
    require_authentication: bool = False
    trusted_authserv_ids: frozenset[str] = frozenset()


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
    agent_mail: AgentMailPolicy = field(default_factory=AgentMailPolicy)

    def is_own(self, email: str) -> bool:
        return is_own(email, self.own_addresses, self.support_domains)

    def is_agent(self, email: str) -> bool:
        return email.lower() in self.agents
