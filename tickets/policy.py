"""What the domain needs to know of the configuration, as plain values."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from parsers import Limits, SpamRules
from tickets.actions import Catalogue
from tickets.addresses import is_own
from tickets.priority import PriorityMatrix
from tickets.routing import Rule


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
    # A known Message-ID that is not ours (a customer's, which leaks through any CC or
    # forward) threads only a participant's or an agent's mail; our signed ids, anyone's.
    message_id_requires_participant: bool = True
    # Watchers one mail may add (the rest are recorded, not added): a forged mail CC'ing
    # a hundred strangers must not make them recipients of the ticket's mail.
    max_new_watchers: int = 10
    honour_reply_to: bool = False
    default_language: str = "es"
    max_attempts: int = 3  # content failures before quarantine
    # Transient failures (disk full, database away) retry after a doubling delay.
    retry_base_seconds: float = 10.0
    retry_max_seconds: float = 900.0
    instance: str = "buzon"
    limits: Limits = field(default_factory=Limits)  # how much of one mail is parsed
    spam: SpamRules = field(default_factory=SpamRules)  # which filter verdicts are spam
    routing: tuple[Rule, ...] = ()  # routing rules for new tickets, in order
    matrix: PriorityMatrix = field(default_factory=PriorityMatrix)
    # A mail written longer ago than this (a backlog, an import) opens its ticket without
    # an acknowledgement: nobody wants an answer to a question of last month.
    acknowledge_max_age_hours: float = 168.0
    agent_mail: AgentMailPolicy = field(default_factory=AgentMailPolicy)

    def is_own(self, email: str) -> bool:
        return is_own(email, self.own_addresses, self.support_domains)

    def is_agent(self, email: str) -> bool:
        return email.lower() in self.agents
