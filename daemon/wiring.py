"""The composition root: builds every part of buzón from Settings, and the runners.

`App` holds the engine, the session factory, the domain's policies, the notifier and
the desk; its runner factories give each runner its parts and hooks at construction.
`RUNNERS` says which runners each long-lived command starts. Nothing below this
module imports it: only the CLI (and `python -m daemon`) do.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from daemon import secret_key
from daemon.config import (
    ConfigError,
    ImapMailbox,
    RoutingRuleConfig,
    Settings,
    SlaTargetConfig,
    SmtpConfig,
    check_hostport,
    split_hostport,
)
from tickets.actions import Catalogue
from tickets.addresses import expire_bouncing
from tickets.db import DbTimeouts, make_engine, make_session_factory, upgrade
from tickets.inbox import release_claims
from tickets.models import utcnow
from tickets.priority import PriorityMatrix
from tickets.routing import Actions, Rule, compile_words, urgent_rule
from tickets.webhooks import EVENTS, Hook, WebhookPlanner

# What only some commands use is imported where it is used: a one-shot command such as
# `buzon tickets list` does not import aiosmtpd, imapclient, APScheduler, Jinja2, the
# web stack or the parsers (tests/test_cli_startup.py).
if TYPE_CHECKING:
    from daemon.config import OutboundConfig, WebhooksConfig
    from daemon.desk import Desk
    from daemon.health import Health, HttpServer
    from daemon.intake.imap_poller import Connect, ImapPoller
    from daemon.intake.ingest_worker import IngestWorker
    from daemon.intake.smtp_server import SmtpListener
    from daemon.intake.smtp_store import Gate, SharedWriteGate
    from daemon.scheduler import Scheduler
    from daemon.supervisor import Component
    from daemon.web.parts import WebParts
    from daemon.web.server import WebServer
    from daemon.workers import WorkerPool
    from notifier.delivery import DeliveryPolicy
    from notifier.notify import Notifier
    from notifier.sla_mail import StaffRouting
    from notifier.staff_mail import StaffNotifier
    from notifier.transports import Transport
    from notifier.webhooks import WebhookPolicy
    from parsers import SpamRules
    from tickets.policy import MailPolicy
    from tickets.sla import SlaPolicy


# Which runners each long-lived command starts ("imap" stands for one per mailbox).
RUNNERS: dict[str, tuple[str, ...]] = {
    "run": ("ingest", "imap", "smtp", "scheduler", "web"),
    "smtp": ("ingest", "smtp"),
    "imap": ("ingest", "imap"),
    "scheduler": ("scheduler",),
}


@dataclass
class App:
    settings: Settings

    @cached_property
    def notifier(self) -> Notifier:
        from notifier.compose import Mailbox
        from notifier.notify import Notifier, NotifySettings
        from notifier.recipients import Budget
        from notifier.render import Renderer

        s = self.settings
        out = s.outbound
        return Notifier(
            NotifySettings(
                sender=Mailbox(s.primary_address, out.from_name),
                secret=self.secret,
                subject_tag=s.subject_tag,
                budget=Budget(
                    out.budget_per_recipient,
                    out.budget_per_ticket,
                    out.budget_window_seconds,
                    stranger_tickets=out.stranger_tickets_per_window,
                    stranger_window_seconds=out.stranger_window_seconds,
                ),
                is_own=s.is_own_address,
                is_agent=lambda email: email.lower() in s.agent_addresses,
                attachments_dir=s.attachments_dir,
                queues={
                    address: (queue.from_name, queue.signature)
                    for address, queue in s.routing.queues.items()
                },
                survey=s.sla.survey,
                agent_names=s.agent_names,
            ),
            Renderer(out.templates_dir),
        )

    @cached_property
    def secret(self) -> bytes:
        """The configured key, or the one generated into the data dir on first start."""
        if self.settings.secret_key:
            return self.settings.secret_key.encode()
        return secret_key.load_or_create(self.settings.data_dir / "secret.key")

    @cached_property
    def staff(self) -> StaffNotifier | None:
        """Agents' mail (new tickets, replies, assignments, escalations); None when off."""
        from notifier.staff_mail import StaffDirectory, StaffNotifier

        s = self.settings
        if not s.agent_mail.notify:
            return None
        return StaffNotifier(
            self.notifier.settings,
            StaffDirectory(
                agents=s.agent_names,
                agent_teams={a.address: tuple(a.teams) for a in s.agents},
                teams={t: tuple(a) for t, a in s.tickets.addresses_by_team().items()},
                triage=tuple(s.tickets.triage_addresses),
                language=s.default_language,
                own_addresses=s.own_addresses,
            ),
        )

    @cached_property
    def routing(self) -> StaffRouting:
        """Who hears of SLA warnings, breaches and escalation tiers."""
        from notifier.sla_mail import StaffRouting

        s = self.settings
        return StaffRouting(
            tier1=tuple(s.sla.tier1_addresses),
            tier2=tuple(s.sla.tier2_addresses),
            teams={team: tuple(a) for team, a in s.tickets.addresses_by_team().items()},
            language=s.default_language,
            timezone=s.sla.timezone,
            own_addresses=s.own_addresses,
        )

    @cached_property
    def routing_rules(self) -> tuple[Rule, ...]:
        """The shipped urgent-emergency rule (unless turned off), then the configured ones."""
        cfg = self.settings.routing
        rules = [_rule(r) for r in cfg.rules]
        if cfg.urgent_rule:
            urgent = urgent_rule()
            rules.insert(0, replace(urgent, words=compile_words(cfg.urgent_words)))
        return tuple(rules)

    @cached_property
    def desk(self) -> Desk:
        from daemon.desk import Desk

        return Desk(
            self.sessions,
            self.policy,
            self.sla_policy,
            self.notifier,
            self.routing,
            staff=self.staff,
            webhooks=self.webhook_planner,
        )

    @cached_property
    def webhook_planner(self) -> WebhookPlanner | None:
        """Writes the webhook deliveries of each change; None when no hook is configured."""
        hooks = self.settings.webhooks.hooks
        for hook in hooks:
            unknown = sorted(set(hook.events) - set(EVENTS))
            if unknown:
                raise ConfigError(
                    f"webhooks.hooks {hook.name!r}: unknown event(s) {', '.join(unknown)}; "
                    f"known: {', '.join(EVENTS)}"
                )
        names = [hook.name for hook in hooks]
        if len(set(names)) != len(names):
            raise ConfigError("webhooks.hooks: two hooks have the same name")
        if not hooks:
            return None
        return WebhookPlanner([Hook(h.name, frozenset(h.events)) for h in hooks])

    @cached_property
    def webhook_policy(self) -> WebhookPolicy:
        from notifier.webhooks import WebhookPolicy

        cfg = self.settings.webhooks
        return WebhookPolicy(instance=self.instance, timeout=cfg.timeout, **_retry(cfg))

    def deliver_webhooks(self, now: datetime) -> Counter[str]:
        """One pass of webhook deliveries (the scheduler's job): sent / retry / dead /
        skipped. Rows of a hook no longer configured go dead."""
        from notifier.webhooks import Receiver, deliver_webhooks

        receivers = {h.name: Receiver(h.url, h.secret) for h in self.settings.webhooks.hooks}
        return deliver_webhooks(self.sessions, receivers, now, self.webhook_policy)

    @cached_property
    def catalogue(self) -> Catalogue:
        cfg = self.settings.tickets
        return Catalogue(
            categories=tuple(cfg.categories),
            teams=tuple(cfg.team_names),
            matrix=PriorityMatrix(cfg.priority_matrix),
            agents=self.settings.agent_names,
        )

    def transport(self) -> Transport:
        """The configured relay, or the local Maildir when there is none."""
        from notifier.transports import MaildirTransport, SmtpTransport

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
        from notifier.delivery import DeliveryPolicy
        from notifier.planned import Materializer

        out = self.settings.outbound
        return DeliveryPolicy(
            instance=self.instance,
            batch_size=out.batch_size,
            claim_seconds=out.claim_seconds,
            **_retry(out),
            materializer=Materializer(self.notifier.renderer, self.settings.attachments_dir),
        )

    @cached_property
    def db_timeouts(self) -> DbTimeouts:
        db = self.settings.database
        return DbTimeouts(**db.model_dump(include=set(DbTimeouts.__dataclass_fields__)))

    @cached_property
    def engine(self) -> Engine:
        return make_engine(self.settings.db_url, self.db_timeouts)

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return make_session_factory(self.engine)

    @cached_property
    def reader(self) -> sessionmaker[Session]:
        """Sessions for lookups that must not queue for SQLite's write lock (every session
        of `sessions` takes it up front, with BEGIN IMMEDIATE): WAL readers never wait
        for the writer. On PostgreSQL, `sessions` themselves."""
        if not self.settings.db_url.startswith("sqlite"):
            return self.sessions
        from sqlalchemy import create_engine

        busy = self.db_timeouts.sqlite_busy_timeout
        engine = create_engine(
            self.settings.db_url, connect_args={"timeout": busy, "isolation_level": None}
        )
        return make_session_factory(engine)

    @cached_property
    def health(self) -> Health:
        """One per process: the components register their readiness checks and counters."""
        from daemon.health import Health

        return Health(self.sessions, self.settings.database.health_check_timeout)

    @cached_property
    def instance(self) -> str:
        return self.settings.instance_name or f"{socket.gethostname()}:{os.getpid()}"

    @cached_property
    def policy(self) -> MailPolicy:
        from parsers import Limits  # the parsing stack: not for one-shot reads
        from tickets.policy import AgentMailPolicy, MailPolicy

        s = self.settings
        return MailPolicy(
            own_addresses=s.own_addresses,
            secret=self.secret,
            attachments_dir=s.attachments_dir,
            support_domains=frozenset(s.support_domains),
            agents=s.agent_addresses,
            subject_tag=s.subject_tag,
            tag_requires_participant=s.tag_requires_participant,
            message_id_requires_participant=s.message_id_requires_participant,
            max_new_watchers=s.ingest.max_new_watchers,
            honour_reply_to=s.honour_reply_to,
            default_language=s.default_language,
            max_attempts=s.ingest.max_attempts,
            retry_base_seconds=s.ingest.retry_base_seconds,
            retry_max_seconds=s.ingest.retry_max_seconds,
            instance=self.instance,
            agent_mail=AgentMailPolicy(
                team_members=self._team_members(),
                catalogue=self.catalogue,
                require_authentication=s.agent_mail.require_authentication,
                trusted_authserv_ids=frozenset(
                    i.lower() for i in s.agent_mail.trusted_authserv_ids
                ),
            ),
            limits=Limits(s.ingest.max_parts, s.ingest.max_depth, s.ingest.max_decoded_bytes),
            spam=self.spam_rules,
            routing=self.routing_rules,
            matrix=PriorityMatrix(s.tickets.priority_matrix),
            acknowledge_max_age_hours=s.ingest.acknowledge_max_age_hours,
        )

    @cached_property
    def spam_rules(self) -> SpamRules:
        from parsers import SpamRules

        cfg = self.settings.spam
        return SpamRules(
            enabled=cfg.enabled,
            threshold=cfg.threshold,
            header=cfg.header,
            pattern=cfg.pattern,
            dmarc_policies=frozenset(cfg.dmarc_policies),
        )

    def _team_members(self) -> dict[str, frozenset[str]]:
        """A team address → the configured agents of that team: a notification sent to a
        team address may be answered, with agent power, by any of them."""
        s = self.settings
        members: dict[str, set[str]] = {}
        for team, addresses in s.tickets.addresses_by_team().items():
            agents = {a.address for a in s.agents if team.lower() in map(str.lower, a.teams)}
            for address in addresses:
                members.setdefault(address, set()).update(agents)
        return {address: frozenset(agents) for address, agents in members.items()}

    @cached_property
    def sla_policy(self) -> SlaPolicy:
        from tickets.calendar import BusinessCalendar
        from tickets.sla import SlaPolicy, Target

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
        (a broken override stops start-up rather than the first notification; the shipped
        ones are compiled by the tests, so without an override Jinja2 is not imported)."""
        self.settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.settings.data_dir.chmod(0o700)  # also a data dir made by an older version
        upgrade(self.engine)
        _ = self.secret  # an empty or short key file stops start-up (it signs addresses)
        _ = self.webhook_planner  # a hook with an unknown event stops start-up
        if self.settings.outbound.templates_dir is None:
            return
        from jinja2 import TemplateError

        try:
            self.notifier.renderer.check()
        except TemplateError as exc:
            where = getattr(exc, "filename", None) or getattr(exc, "name", None) or "?"
            raise ConfigError(f"outbound.templates_dir: template {where}: {exc}") from None

    # --- runners -------------------------------------------------------------------------

    def runners(
        self, command: str, *, smtp: SmtpConfig | None = None, http: str | None = None
    ) -> dict[str, Component]:
        """The runners of a long-lived command (RUNNERS), each built with its parts and
        hooks, plus the HTTP endpoint. `smtp` and `http` carry command-line overrides."""
        from daemon.sdnotify import watchdog_with

        wanted = RUNNERS[command]
        runners: dict[str, Component] = {}
        worker: IngestWorker | WorkerPool | None = None
        pool: WorkerPool | None = None  # the IMAP pollers hand their batches to it
        if "ingest" in wanted:
            processes = self.settings.ingest.worker_processes()
            if processes > 1:
                worker = pool = self.worker_pool(processes)
            else:
                worker = self.ingest_worker()
            runners["ingest"] = worker.run
            self.health.watch_worker(worker.progress_age, self.settings.database.worker_stuck_after)
        runners["watchdog"] = watchdog_with(self.health.vital_async)
        if "imap" in wanted:
            runners |= {f"imap:{p.name}": p.run for p in self.imap_pollers(pool)}
        smtp = smtp or self.settings.smtp
        if "smtp" in wanted and smtp.enabled:
            probe_bind(smtp.listen, "smtp.listen")
            listener = self.smtp_listener(worker, smtp)
            runners["smtp"] = listener.run
        if "scheduler" in wanted:
            runners["scheduler"] = self.scheduler().run
        if "web" in wanted and self.settings.web.enabled:
            web = self.web_server()
            self.health.add_check("web", web.ready)
            runners["web"] = web.run
        server = self.http_server(http)
        if server is not None:
            runners["http"] = server.run
        return runners

    @cached_property
    def web_parts(self) -> WebParts:
        from daemon.web.parts import WebParts

        s = self.settings
        return WebParts(
            sessions=self.sessions,
            desk=self.desk,
            catalogue=self.catalogue,
            config=s.web,
            agents=s.agent_names,
            language=s.default_language,
            base_url=(s.web.base_url or f"http://{s.web.listen}").rstrip("/"),
            attachments_dir=s.attachments_dir,
            expire_bouncing=self.expire_bouncing,
            renderer=self.notifier.renderer,
            sender=self.notifier.settings.sender,
            timezone=s.sla.timezone,
        )

    def web_server(self, bind: tuple[str, int] | None = None) -> WebServer:
        """The API and console listener; `bind` overrides web.listen (tests: port 0)."""
        # The web stack (uvicorn, Starlette) is imported only by the commands that serve it.
        from daemon.web.app import build
        from daemon.web.server import WebServer

        host, port = bind or split_hostport(self.settings.web.listen)
        try:
            return WebServer(build(self.web_parts), host, port)
        except OSError as exc:
            raise ConfigError(f"web.listen {host}:{port}: {exc.strerror or exc}") from None

    def ingest_worker(self) -> IngestWorker:
        from daemon.intake.ingest_worker import IngestWorker

        cfg = self.settings.ingest
        processed = self.health.metrics.processed
        worker = IngestWorker(
            self.sessions,
            self.desk.ingest,
            ingest_batch=self.desk.ingest_batch,
            instance=self.instance,
            batch_size=cfg.batch_size,
            poll_interval=cfg.poll_interval,
            stale_claim_seconds=cfg.stale_claim_seconds,
            shutdown_grace=self.settings.smtp.shutdown_grace,
            on_outcome=lambda state: processed.labels(state).inc(),
        )
        worker.max_attempts = cfg.max_attempts  # for a failure that escaped the desk
        return worker

    def worker_pool(self, processes: int) -> WorkerPool:
        """`processes` ingest worker processes (daemon.workers), each with its own App.
        On SQLite they take turns at the write lock with this process's intake."""
        from daemon.intake.smtp_store import SharedWriteGate
        from daemon.workers import WorkerPool

        gate = SharedWriteGate() if self.settings.db_url.startswith("sqlite") else None
        processed = self.health.metrics.processed
        dialect = self.engine.dialect  # its driver is imported by now: the schema check
        pool = WorkerPool(
            ingest_process,
            (self.settings, gate),
            processes,
            drain_seconds=self.settings.smtp.shutdown_grace,
            on_outcome=lambda state: processed.labels(state).inc(),
            gate=gate,
            finish=lambda: self._drain_left(processes),
            preload=(*WORKER_MODULES, type(dialect).__module__, dialect.loaded_dbapi.__name__),
        )
        pool.start_server()  # it imports while the rest of the start-up goes on
        self.health.add_check("workers", pool.ready)
        return pool

    def _drain_left(self, processes: int) -> int:
        """At shutdown, once the worker processes are gone: what they left, processed here."""
        worker = self.ingest_worker()
        if self.settings.instance_name:  # the workers' names (see ingest_process)
            names = {f"{self.settings.instance_name}/w{i}" for i in range(processes)}
            release_claims(self.sessions, names)
        worker.recover_dead_claims()  # HOST:PID names of exited workers
        return worker.drain()

    def smtp_listener(
        self,
        worker: IngestWorker | WorkerPool | None,
        config: SmtpConfig | None = None,
        *,
        bind: tuple[str, int] | None = None,
    ) -> SmtpListener:
        """The listener: the store, our addresses, and the worker to wake after each
        accept (the worker drains at shutdown, after the listener has closed)."""
        from daemon.intake.smtp_server import SmtpListener
        from daemon.intake.smtp_store import IntakeStore, WriteGate
        from daemon.workers import WorkerPool

        config = config or self.settings.smtp
        gate: Gate | None = None
        if self.settings.db_url.startswith("sqlite"):
            gate = worker.gate if isinstance(worker, WorkerPool) and worker.gate else WriteGate()
            gate.install(self.engine)  # every other transaction of this process waits its turn
        source = "lmtp" if config.lmtp else "smtp"
        store = IntakeStore(
            self.settings.db_url, source, config.store_timeout, gate, self.db_timeouts
        )
        metrics = self.health.metrics
        accepted = metrics.accepted.labels(source)
        wake = worker.wake.set if worker is not None else None

        def on_accept() -> None:
            accepted.inc()
            if wake is not None:
                wake()

        try:
            listener = SmtpListener(
                config,
                is_ours=self.settings.is_own_address,
                store=store,
                bind=bind,
                on_accept=on_accept,
                on_session=metrics.smtp_sessions.inc,
                on_close=store.aclose,
            )
        except ConfigError:
            if gate is not None:
                gate.uninstall()
            store.engine.dispose()
            raise
        if worker is not None:
            worker.upstream_open = lambda: listener.serving
        self.health.add_check(source, listener.ready)
        return listener

    def imap_pollers(self, pool: WorkerPool | None = None) -> list[ImapPoller]:
        """One poller per configured mailbox; none when no mailbox is configured."""
        return [self.imap_poller(m, pool=pool) for m in self.settings.imap.mailboxes]

    def imap_poller(
        self,
        mailbox: ImapMailbox,
        connect: Connect | None = None,
        *,
        pool: WorkerPool | None = None,
    ) -> ImapPoller:
        """A poller of `mailbox`; `connect` overrides the configured server (tests). With
        `pool` (worker processes), it stores its batches and hands them to the workers,
        which process them on the other cores while it fetches the next ones."""
        from daemon.intake.imap_auth import credentials_for
        from daemon.intake.imap_poller import Backoff, ImapPoller, connect_factory

        imap = self.settings.imap
        metrics = self.health.metrics

        def outcome(state: str) -> None:
            if state != "oversize":  # recorded again under its final state
                metrics.processed.labels(state).inc()

        poller = ImapPoller(
            mailbox,
            connect=connect or connect_factory(mailbox),
            credentials=credentials_for(mailbox, self.settings.data_dir),
            sessions=self.sessions,
            ingest=lambda raw_id: self.desk.ingest(raw_id).state,
            ingest_batch=lambda ids: [o.state for o in self.desk.ingest_batch(ids)],
            holder=self.instance,
            lease_seconds=imap.lease_seconds,
            backoff=Backoff(imap.reconnect_min_seconds, imap.reconnect_max_seconds),
            on_accept=metrics.accepted.labels("imap").inc,
            on_outcome=outcome,
            handoff=pool.hand_over if pool is not None else None,
            reader=self.reader,
        )
        if pool is not None:
            pool.on_progress.append(poller.processed.set)
        self.health.add_check(f"imap:{mailbox.name}", poller.ready)
        return poller

    def scheduler(
        self,
        clock: Callable[[], datetime] = utcnow,
        *,
        transport: Callable[[], Transport] | None = None,
    ) -> Scheduler:
        """The periodic jobs; outbox last, so a pass delivers what the others queued."""
        from daemon.scheduler import JobFunction, Scheduler

        sla = self.settings.sla
        every = sla.scan_interval_seconds
        jobs: dict[str, tuple[JobFunction, float]] = {
            "sla_scan": (self.desk.scan_sla, every),
            "auto_close": (lambda now: self.desk.auto_close(now, sla.auto_close_after_days), every),
            "reminders": (lambda now: self.desk.remind(now, sla.reminder_after_days), every),
            "outbox": (lambda now: self.deliver(now, transport), sla.outbox_interval_seconds),
            "webhooks": (
                lambda now: sum(self.deliver_webhooks(now).values()),
                self.settings.webhooks.interval_seconds,
            ),
        }
        return Scheduler(jobs, self.sessions, clock)

    def deliver(self, now: datetime, transport: Callable[[], Transport] | None = None) -> int:
        """One delivery pass of the outbox (the scheduler's job): rows handled."""
        return sum(self.deliver_counts(now, transport).values())

    def deliver_counts(
        self, now: datetime, transport: Callable[[], Transport] | None = None
    ) -> Counter[str]:
        """One delivery pass of the outbox: sent / retry / failed / skipped. Bouncing
        marks past `outbound.bouncing_days` are lifted first, so the pass (and every
        notification planned after it) mails those addresses again."""
        from notifier.delivery import deliver_due

        self.expire_bouncing(now)
        counts = deliver_due(
            self.sessions, (transport or self.transport)(), now, self.delivery_policy
        )
        self.health.metrics.outbox_sent.inc(counts.get("sent", 0))
        return counts

    def expire_bouncing(self, now: datetime) -> int:
        """Lift bouncing marks older than `outbound.bouncing_days`; how many."""
        days = self.settings.outbound.bouncing_days
        with self.sessions.begin() as session:
            return expire_bouncing(session, now - timedelta(days=days))

    def http_server(self, listen: str | None = None) -> HttpServer | None:
        """The endpoint of this process, or None when http.enabled is false.

        `listen` (the --http option) overrides http.listen: in a split deployment every
        process needs a port of its own.
        """
        from daemon.health import HttpServer

        if not self.settings.http.enabled:
            return None
        listen = listen or self.settings.http.listen
        try:
            host, port = split_hostport(check_hostport(listen))
        except ValueError:
            raise ConfigError(f"http.listen: expected HOST:PORT, got {listen!r}") from None
        try:
            return HttpServer(self.health, host, port)
        except OSError as exc:
            raise ConfigError(
                f"http.listen {listen}: {exc.strerror or exc} (each process needs its own "
                "port: --http HOST:PORT or BUZON_HTTP__LISTEN)"
            ) from None


# What an ingest worker process imports, here or on its first mail: the fork server
# (daemon.workers) imports them once, and every worker it forks starts with them.
WORKER_MODULES = (
    "daemon.wiring",
    "daemon.workers",
    "daemon.logs",
    "daemon.supervisor",
    "daemon.desk",
    "daemon.health",
    "daemon.intake.ingest_worker",
    "tickets.batch",
    "tickets.search",
    "tickets.calendar",
    "holidays.countries",  # every country: the calendar looks its one up (0.5 s)
    "notifier.notify",
    "notifier.render",
    "notifier.planned",
)


def ingest_process(
    settings: Settings,
    gate: SharedWriteGate | None,
    index: int,
    channel: socket.socket,
) -> None:
    """The body of ingest worker process `index` (daemon.workers): an App of its own."""
    from daemon.logs import configure as configure_logging
    from daemon.supervisor import EX_CONFIG
    from daemon.workers import serve_worker

    configure_logging(settings.log.level, settings.log.json_format)
    if settings.instance_name:  # instance names are claim holders: each worker its own
        settings = settings.model_copy(
            update={"instance_name": f"{settings.instance_name}/w{index}"}
        )
    try:
        app = App(settings)
        if gate is not None:
            gate.install(app.engine)
        worker = app.ingest_worker()
    except ConfigError as exc:
        logging.getLogger("buzon.workers").error("%s", exc)
        sys.exit(EX_CONFIG)
    code = serve_worker(worker, channel)
    app.engine.dispose()
    # Everything is committed: skip the interpreter's teardown, which took seconds on a
    # busy machine and would count against the parent's stop deadline.
    logging.shutdown()
    os._exit(code)


def _rule(cfg: RoutingRuleConfig) -> Rule:
    return Rule(
        name=cfg.name,
        actions=Actions(
            team=cfg.team,
            category=cfg.category,
            priority=cfg.priority,
            impact=cfg.impact,
            urgency=cfg.urgency,
            level=cfg.level,
            assignee=cfg.assignee,
            language=cfg.language,
            tags=tuple(cfg.tags),
            acknowledge=cfg.acknowledge,
        ),
        to=frozenset(cfg.to),
        sources=frozenset(cfg.sources),
        senders=frozenset(cfg.senders),
        words=compile_words(cfg.words),
        regex=re.compile(cfg.regex, re.I) if cfg.regex else None,
        proceed=cfg.proceed,
    )


def probe_bind(listen: str, key: str) -> None:
    """A port we cannot bind is a configuration error (78: not restarted in a loop), as
    for the HTTP port. The listener binds later, inside the event loop, where a failure
    would be a crashed component (exit 1, restarted forever); so try it here first.
    SO_REUSEADDR as asyncio sets it: a port in TIME_WAIT is free, one with a listener not."""
    host, port = split_hostport(listen)
    if port == 0:
        return
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
    except OSError as exc:
        raise ConfigError(f"{key} {listen}: {exc.strerror or exc}") from None


def _retry(section: OutboundConfig | WebhooksConfig) -> dict[str, Any]:
    """The retry settings the outbound and webhooks sections share (`notifier.retry`)."""
    return section.model_dump(include={"max_attempts", "retry_base_seconds", "retry_max_seconds"})
