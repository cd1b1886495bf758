"""Health, readiness and Prometheus metrics over HTTP on a local port (no wiring: the
runners' readiness checks and counters are handed in by `daemon.wiring`).

`/healthz` says the process is alive; `/readyz` checks the database and asks every
component whether it is ready (listener bound, poller connected); `/metrics` serves the
Prometheus text format. Store-derived figures are read at scrape time, so every
instance sharing a database reports the same queue and ticket figures.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any, TypeVar
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from tickets.errors import describe
from tickets.models import Event, ImapMailboxState, RawMessage, RawState, Ticket, utcnow
from tickets.queries import queue_figures
from tickets.webhooks import SENT, counts_by_state

log = logging.getLogger("buzon.health")

ReadyCheck = Callable[[], tuple[bool, str]]
T = TypeVar("T")


class Bounded:
    """Runs a blocking call in a thread of its own and waits at most `timeout` for it.

    A store behind a partition can hold a query for many minutes; a health check must
    answer "no" within its bound instead. While an earlier call is still hung, the next
    one fails at once rather than piling up threads. The thread is a daemon: it never
    delays the exit.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def call(self, fn: Callable[[], T], timeout: float) -> T:
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["result"] = fn()
            except BaseException as exc:  # handed to the caller below
                box["error"] = exc

        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                raise TimeoutError(f"{self.name}: the previous check is still waiting")
            thread = threading.Thread(target=target, name=f"buzon-check-{self.name}", daemon=True)
            self._thread = thread
            thread.start()
        thread.join(timeout)
        if thread.is_alive():
            raise TimeoutError(f"{self.name}: no answer within {timeout:g}s")
        if "error" in box:
            raise box["error"]
        result: T = box["result"]
        return result


class Metrics:
    """The process's own counters (they restart at zero with the process)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.smtp_sessions = Counter(
            "buzon_smtp_sessions", "SMTP/LMTP sessions opened", registry=registry
        )
        self.accepted = Counter(
            "buzon_messages_accepted",
            "Raw messages stored by this process",
            ["source"],
            registry=registry,
        )
        self.processed = Counter(
            "buzon_messages_processed",
            "Messages processed by this process, by outcome",
            ["state"],
            registry=registry,
        )
        # Send-budget refusals and SLA events are read from the store (StoreCollector):
        # they are fired by whichever instance's scheduler or ingest got there first.
        self.outbox_sent = Counter(
            "buzon_outbox_delivered",
            "Outbound mails delivered by this process",
            registry=registry,
        )
        self.ready = Gauge("buzon_ready", "1 when /readyz would answer 200", registry=registry)


class StoreCollector(Collector):
    """Figures read from the database at scrape time."""

    def __init__(self, sessions: sessionmaker[Session], timeout: float = 10.0) -> None:
        self.sessions = sessions
        self.timeout = timeout
        self._bounded = Bounded("metrics")

    def collect(self) -> Iterator[Metric]:
        try:
            # Read to the end in the bounded thread: a scrape answers even when the store
            # hangs (the process's own figures, the worker's state included, still show).
            yield from self._bounded.call(self._read, self.timeout)
        except Exception as exc:  # a scrape must not fail because the store is away
            log.warning("metrics: store unavailable: %s", describe(exc))

    def _read(self) -> list[Metric]:
        with self.sessions() as session:
            return list(self._collect(session, utcnow()))

    def _collect(self, session: Session, now: datetime) -> Iterable[Metric]:
        figures = queue_figures(session)
        raw = GaugeMetricFamily(
            "buzon_raw_messages",
            "Stored raw messages by source and state",
            labels=["source", "state"],
        )
        for source, states in figures["raw_by_source"].items():
            for state, count in states.items():
                raw.add_metric([source, state], count)
        yield raw
        oldest = session.scalar(
            select(func.min(RawMessage.received_at)).where(
                RawMessage.state.in_([RawState.PENDING, RawState.PROCESSING])
            )
        )
        yield _gauge(
            "buzon_oldest_unprocessed_seconds",
            "Age of the oldest message not yet processed (0 when none)",
            (now - oldest).total_seconds() if oldest else 0.0,
        )
        quarantined = figures["raw"].get(RawState.QUARANTINED, 0)
        yield _gauge("buzon_quarantine_size", "Messages in quarantine", quarantined)
        tickets = GaugeMetricFamily(
            "buzon_tickets", "Tickets by status and level", labels=["status", "level"]
        )
        for status, level, count in session.execute(
            select(Ticket.status, Ticket.level, func.count()).group_by(Ticket.status, Ticket.level)
        ):
            tickets.add_metric([status, str(level)], count)
        yield tickets
        outbox = GaugeMetricFamily("buzon_outbox", "Outbound mails by state", labels=["state"])
        for state, count in figures["outbox"].items():
            outbox.add_metric([state], count)
        yield outbox
        yield from self._webhooks(session)
        yield from self._events(session)
        yield from self._mailboxes(session, now)

    def _webhooks(self, session: Session) -> Iterable[Metric]:
        by_state = counts_by_state(session)
        deliveries = GaugeMetricFamily(
            "buzon_webhook_deliveries",
            "Webhook deliveries by state (dead: gave up, waiting for `buzon webhooks retry`)",
            labels=["state"],
        )
        for state, count in by_state.items():
            deliveries.add_metric([state], count)
        yield deliveries
        # From the store, like the SLA events: any instance may have sent them.
        yield CounterMetricFamily(
            "buzon_webhooks_sent",
            "Webhook deliveries a receiver accepted (2xx), all instances",
            value=by_state[SENT],
        )

    def _events(self, session: Session) -> Iterable[Metric]:
        # Every recipient the notifier left out; reason budget_recipient/budget_ticket are
        # the send-budget refusals, the others the loop guards (own address, bouncing...).
        refusals = CounterMetricFamily(
            "buzon_notify_refusals",
            "Recipients left out of automatic mails, by reason (budget_* = send budget)",
            labels=["reason"],
        )
        reason = Event.data["reason"].as_string()
        for why, count in session.execute(
            select(reason, func.count()).where(Event.kind == "notify_refused").group_by(reason)
        ):
            refusals.add_metric([why or "unknown"], count)
        yield refusals
        sla = CounterMetricFamily(
            "buzon_sla_events",
            "SLA warnings, breaches and escalation tiers fired, by clock and kind",
            labels=["clock", "kind"],
        )
        # once_key is "sla:<clock>:<warning|breach>" or "sla:tier:<n>".
        for key, count in session.execute(
            select(Event.once_key, func.count())
            .where(Event.once_key.like("sla:%"))
            .group_by(Event.once_key)
        ):
            _, clock, kind = ((key or "").split(":") + ["", ""])[:3]
            sla.add_metric([clock, kind], count)
        yield sla

    def _mailboxes(self, session: Session, now: datetime) -> Iterable[Metric]:
        last_poll = GaugeMetricFamily(
            "buzon_imap_last_success_age_seconds",
            "Seconds since the last successful poll of a mailbox",
            labels=["mailbox"],
        )
        token_age = GaugeMetricFamily(
            "buzon_imap_oauth_token_age_seconds",
            "Seconds since the mailbox's OAuth2 token was last refreshed",
            labels=["mailbox"],
        )
        for box in session.scalars(select(ImapMailboxState)):
            if box.last_success_at:
                last_poll.add_metric([box.name], (now - box.last_success_at).total_seconds())
            if box.token_refreshed_at:
                token_age.add_metric([box.name], (now - box.token_refreshed_at).total_seconds())
        yield last_poll
        yield token_age


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


class Health:
    """Readiness checks registered by the components, and the metrics registry."""

    def __init__(self, sessions: sessionmaker[Session], check_timeout: float = 5.0) -> None:
        self.sessions = sessions
        self.check_timeout = check_timeout
        self.registry = CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.registry.register(StoreCollector(sessions, timeout=2 * check_timeout))
        self._checks: dict[str, ReadyCheck] = {"database": self._database}
        self._vital = ["database"]  # what the systemd watchdog is fed on
        self._probe = Bounded("database")
        self._worker_gauges: tuple[Gauge, Gauge] | None = None
        # Read at every scrape, not only when someone asks /readyz.
        self.metrics.ready.set_function(lambda: 1.0 if self.readiness()[0] else 0.0)

    def add_check(self, name: str, check: ReadyCheck) -> None:
        self._checks[name] = check

    def readiness(self) -> tuple[bool, dict[str, str]]:
        results: dict[str, str] = {}
        ready = True
        for name, check in self._checks.items():
            try:
                ok, detail = check()
            except Exception as exc:
                ok, detail = False, f"{type(exc).__name__}: {exc}"
            ready &= ok
            results[name] = ("ok" if ok else "FAIL") + (f": {detail}" if detail else "")
        return ready, results

    def watch_worker(self, progress_age: Callable[[], float], stuck_after: float) -> None:
        """Make a stuck ingest worker visible: not ready, two gauges, no watchdog ping."""

        def stuck() -> bool:
            return progress_age() > stuck_after

        if self._worker_gauges is None:  # one worker per process; a second call rewires it
            self._worker_gauges = self._new_worker_gauges()
            self._vital.append("ingest")
        age_gauge, stuck_gauge = self._worker_gauges
        age_gauge.set_function(progress_age)
        stuck_gauge.set_function(lambda: 1.0 if stuck() else 0.0)

        def check() -> tuple[bool, str]:
            age = progress_age()
            return (False, f"stuck: no progress for {age:.0f}s") if stuck() else (True, "")

        self.add_check("ingest", check)

    def _new_worker_gauges(self) -> tuple[Gauge, Gauge]:
        return (
            Gauge(
                "buzon_worker_last_progress_age_seconds",
                "Seconds since the ingest worker last finished a message or an empty pass",
                registry=self.registry,
            ),
            Gauge(
                "buzon_worker_stuck",
                "1 when the ingest worker made no progress for database.worker_stuck_after",
                registry=self.registry,
            ),
        )

    def vital(self) -> bool:
        """True while the store answers and the worker moves: the watchdog's condition
        (a listener draining or an IMAP server away is no reason to be restarted)."""
        return all(self._checks[name]()[0] for name in self._vital)

    async def vital_async(self) -> bool:
        return await asyncio.to_thread(self.vital)

    def _database(self) -> tuple[bool, str]:
        try:
            self._probe.call(self._select_one, self.check_timeout)
            return True, ""
        except Exception as exc:
            return False, str(getattr(exc, "orig", exc)).splitlines()[0][:200]

    def _select_one(self) -> None:
        with self.sessions() as session:
            session.execute(text("SELECT 1"))

    def wsgi_app(self) -> Callable[..., Iterable[bytes]]:
        metrics_app = make_wsgi_app(self.registry)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "/")
            if path == "/healthz":
                return _json(start_response, 200, {"status": "alive"})
            if path == "/readyz":
                ready, checks = self.readiness()
                return _json(
                    start_response,
                    200 if ready else 503,
                    {"status": "ready" if ready else "not ready", "checks": checks},
                )
            if path == "/metrics":
                return list(metrics_app(environ, start_response))
            return _json(start_response, 404, {"error": "not found"})

        return app


def _json(start_response: Callable[..., Any], code: int, body: dict[str, Any]) -> list[bytes]:
    payload = json.dumps(body).encode()
    reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[code]
    start_response(
        f"{code} {reason}",
        [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))],
    )
    return [payload]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        return  # scrapes every few seconds would flood the log


class HttpServer:
    """The endpoint in a thread of its own, so a slow store query never stalls the loop."""

    def __init__(self, health: Health, host: str, port: int) -> None:
        self._server: WSGIServer = make_server(
            host, port, health.wsgi_app(), handler_class=_QuietHandler
        )
        self.port = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="buzon-http", daemon=True
        )

    def start(self) -> None:
        self._thread.start()
        log.info("http listening port=%s (/healthz /readyz /metrics)", self.port)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    async def run(self, stop: asyncio.Event) -> None:
        """As a component of `buzon run`."""
        self.start()
        try:
            await stop.wait()
        finally:
            await asyncio.to_thread(self.stop)
