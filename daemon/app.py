"""Wiring: builds the engine, the session factory and the domain's policy from Settings.

Everything that needs configuration receives it from here; nothing reads globals.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from functools import cached_property

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from daemon.config import Settings, SlaTargetConfig
from tickets.calendar import BusinessCalendar
from tickets.db import make_engine, make_session_factory, upgrade
from tickets.ingest import AfterApply
from tickets.policy import MailPolicy
from tickets.sla import SlaPolicy, Target


@dataclass
class App:
    settings: Settings

    @property
    def after_apply(self) -> AfterApply | None:
        """What runs inside the ingest transaction once a mail changed a ticket."""
        return None

    @cached_property
    def engine(self) -> Engine:
        return make_engine(self.settings.db_url)

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return make_session_factory(self.engine)

    @cached_property
    def instance(self) -> str:
        return self.settings.instance_name or f"{socket.gethostname()}:{os.getpid()}"

    @cached_property
    def policy(self) -> MailPolicy:
        s = self.settings
        return MailPolicy(
            own_addresses=s.own_addresses,
            secret=s.secret(),
            attachments_dir=s.attachments_dir,
            support_domains=frozenset(s.support_domains),
            agents=frozenset(s.agents),
            subject_tag=s.subject_tag,
            tag_requires_participant=s.tag_requires_participant,
            honour_reply_to=s.honour_reply_to,
            default_language=s.default_language,
            max_attempts=s.ingest.max_attempts,
            instance=self.instance,
        )

    @cached_property
    def sla_policy(self) -> SlaPolicy:
        cfg = self.settings.sla
        calendar = BusinessCalendar(
            cfg.timezone,
            workdays=cfg.workdays,
            start=cfg.day_start,
            end=cfg.day_end,
            country=cfg.holidays_country,
            subdivision=cfg.holidays_subdivision,
            extra_holidays=cfg.extra_holidays,
        )

        def target(t: SlaTargetConfig) -> Target:
            return Target(t.first_response_hours, t.resolution_hours)

        return SlaPolicy(
            calendar=calendar,
            targets={p: target(t) for p, t in cfg.targets.items()},
            category_targets={
                c: {p: target(t) for p, t in by_priority.items()}
                for c, by_priority in cfg.category_targets.items()
            },
            warn_share=cfg.warn_share,
            tier2_after_hours=cfg.tier2_after_hours,
            level1_breach_to_level2=cfg.level1_breach_to_level2,
            level1_breach_team=cfg.level1_breach_team,
        )

    def prepare(self) -> None:
        """Create the data directory and bring the schema up to date."""
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        upgrade(self.engine)
