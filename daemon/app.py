"""Wiring: builds the engine, the session factory and the domain's policy from Settings.

Everything that needs configuration receives it from here; nothing reads globals.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from functools import cached_property

from jinja2 import TemplateError
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from daemon.config import ConfigError, Settings, SlaTargetConfig, split_hostport
from daemon.health import Health
from notifier.compose import Mailbox
from notifier.delivery import DeliveryPolicy
from notifier.notify import Notifier, NotifySettings
from notifier.recipients import Budget
from notifier.render import Renderer
from notifier.transports import MaildirTransport, SmtpTransport, Transport
from tickets.actions import Catalogue
from tickets.calendar import BusinessCalendar
from tickets.changes import Change
from tickets.db import make_engine, make_session_factory, upgrade
from tickets.ingest import AfterApply
from tickets.models import Ticket, utcnow
from tickets.policy import MailPolicy
from tickets.priority import PriorityMatrix
from tickets.sla import SlaPolicy, Target, fired_keys, refresh


@dataclass
class App:
    settings: Settings

    @property
    def after_apply(self) -> AfterApply | None:
        """What runs inside the transaction of any ticket change (ingest or an agent's
        command): the SLA clocks follow the change, then the notifier writes the outbox
        rows, so that mail exists exactly when the change does."""
        return self._after_apply

    def _after_apply(self, session: Session, changes: list[Change]) -> None:
        self.refresh_sla(session, changes)
        self.notifier(session, changes)

    def refresh_sla(self, session: Session, changes: list[Change]) -> None:
        now = utcnow()
        for ticket_id in dict.fromkeys(c.ticket_id for c in changes):
            ticket = session.get(Ticket, ticket_id)
            if ticket is not None:
                refresh(ticket, self.sla_policy, now, fired_keys(session, ticket_id))

    @cached_property
    def notifier(self) -> Notifier:
        s = self.settings
        out = s.outbound
        return Notifier(
            NotifySettings(
                sender=Mailbox(s.primary_address, out.from_name),
                secret=s.secret(),
                subject_tag=s.subject_tag,
                budget=Budget(
                    out.budget_per_recipient, out.budget_per_ticket, out.budget_window_seconds
                ),
                is_own=s.is_own_address,
                is_agent=lambda email: email.lower() in s.agents,
                attachments_dir=s.attachments_dir,
                survey=s.sla.survey,
            ),
            Renderer(out.templates_dir),
        )

    @cached_property
    def catalogue(self) -> Catalogue:
        cfg = self.settings.tickets
        return Catalogue(
            categories=tuple(cfg.categories),
            teams=tuple(cfg.teams),
            matrix=PriorityMatrix(cfg.priority_matrix),
        )

    def transport(self) -> Transport:
        """The configured relay, or the local Maildir when there is none."""
        out = self.settings.outbound
        if out.relay is None:
            return MaildirTransport(self.settings.outbox_maildir)
        host, port = split_hostport(out.relay)
        return SmtpTransport(
            host,
            port,
            security=out.security,
            user=out.user,
            password=out.password,
            timeout=out.timeout,
            ca_file=out.ca_file,
        )

    @cached_property
    def delivery_policy(self) -> DeliveryPolicy:
        out = self.settings.outbound
        return DeliveryPolicy(
            instance=self.instance,
            batch_size=out.batch_size,
            claim_seconds=out.claim_seconds,
            max_attempts=out.max_attempts,
            retry_base_seconds=out.retry_base_seconds,
            retry_max_seconds=out.retry_max_seconds,
        )

    @cached_property
    def engine(self) -> Engine:
        return make_engine(self.settings.db_url)

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return make_session_factory(self.engine)

    @cached_property
    def health(self) -> Health:
        """One per process: the components register their readiness checks and counters."""
        return Health(self.sessions)

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
        """Create the data directory, bring the schema up to date, compile the templates
        (a broken override stops start-up rather than the first notification)."""
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        upgrade(self.engine)
        try:
            self.notifier.renderer.check()
        except TemplateError as exc:
            where = getattr(exc, "filename", None) or getattr(exc, "name", None) or "?"
            raise ConfigError(f"outbound.templates_dir: template {where}: {exc}") from None
