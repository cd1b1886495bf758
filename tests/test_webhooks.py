"""Webhooks: events written with the change, delivered to a real local HTTP receiver,
signed, retried with backoff, dead-lettered, and sent at least once across a SIGKILL."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, select, text
from starlette.applications import Starlette

from daemon.config import ConfigError
from daemon.web.app import build
from daemon.web.server import WebServer
from daemon.wiring import App
from notifier.webhooks import Receiver as Target
from notifier.webhooks import WebhookPolicy, deliver_webhooks
from tests.fixtures.http_receiver import Receiver
from tests.fixtures.service import http_get, send_mail, wait_for, write_config
from tests.helpers import AGENT, ANA, act, buzon, free_port, ingest, make_app, new_ticket
from tests.mailbuilder import mail, message_id
from tickets import actions, tokens
from tickets.errors import TicketError
from tickets.inbox import accept
from tickets.models import WebhookDelivery, utcnow
from tickets.webhooks import claim, retry, retry_dead

ROOT = Path(__file__).resolve().parents[1]
SECRET = "a-secret-of-sixteen-chars-or-more"
BASE = 5.0  # retry_base_seconds in these tests


def hooks_app(tmp_path: Path, db_url: str, *hooks: dict[str, Any], **webhooks: Any) -> App:
    return make_app(
        tmp_path,
        db_url,
        agents=["agente@soporte.example"],
        support_addresses=["soporte@soporte.example"],
        webhooks={"hooks": list(hooks), "retry_base_seconds": BASE, **webhooks},
    )


def hook(name: str, url: str = "http://127.0.0.1:9/none", **more: Any) -> dict[str, Any]:
    return {"name": name, "url": url, "secret": SECRET, **more}


@pytest.fixture
def happ(tmp_path: Path, db_url: str, receiver: Receiver) -> Iterator[App]:
    """An App on both databases with one hook, every event, to the receiver."""
    application = hooks_app(tmp_path, db_url, hook("crm", receiver.url()), max_attempts=3)
    yield application
    application.engine.dispose()


def rows(app: App, **where: Any) -> list[WebhookDelivery]:
    with app.sessions() as session:
        query = select(WebhookDelivery).filter_by(**where).order_by(WebhookDelivery.id)
        return list(session.scalars(query))


def payloads(app: App, **where: Any) -> list[dict[str, Any]]:
    return [json.loads(r.payload) for r in rows(app, **where)]


# --- events: produced by the real actions, in the change's transaction -----------------------


def test_every_event_kind_comes_from_the_real_action(happ: App) -> None:
    number, raw = new_ticket(happ)
    answer = mail(
        ANA, f"Re: [#{number}] No puedo agendar", "Sigue igual.", in_reply_to=message_id(raw)
    )
    assert ingest(happ, answer).ticket_id == number
    act(happ, number, lambda s, t: actions.reply(s, t, AGENT, "Lo revisamos hoy."))
    act(happ, number, lambda s, t: actions.add_note(s, t, AGENT, "Revisar el pago."))
    act(happ, number, lambda s, t: actions.set_status(s, t, "on_hold", AGENT))
    act(happ, number, lambda s, t: actions.assign(s, t, AGENT, agent="maria", team="Salud"))
    escalation = {"team": "PX", "reason": "Pago pendiente", "escalation_type": "Billing"}
    act(happ, number, lambda s, t: actions.escalate(s, t, AGENT, **escalation))
    events = [p["event"] for p in payloads(happ, ticket_id=number)]
    late, _ = new_ticket(happ, subject="Nadie contesta")
    assert happ.desk.scan_sla(utcnow() + timedelta(days=60)) > 0

    assert events[:4] == ["ticket.created", "article.added", "article.added", "article.added"]
    assert set(events) == {
        "ticket.created",
        "article.added",
        "status.changed",
        "ticket.assigned",
        "ticket.escalated",
    }
    sla = Counter(p["event"] for p in payloads(happ, ticket_id=late))
    assert sla["sla.warning"] >= 1 and sla["sla.breached"] >= 1

    created, customer, agent, note = payloads(happ, ticket_id=number)[:4]
    assert created["ticket"]["number"] == number
    assert created["ticket"]["requester"] == "ana@clinica.example"
    assert set(created["ticket"]) == {
        *("number", "subject", "status", "priority", "level", "team", "assignee", "requester")
    }
    assert created["data"]["article"]["text"].startswith("Hola, el sistema no me deja agendar")
    assert customer["data"]["article"]["author"] == "ana@clinica.example"
    assert customer["data"]["article"]["public"] is True
    assert (agent["data"]["article"]["author"], agent["data"]["article"]["public"]) == (
        AGENT,
        True,
    )
    assert (note["data"]["article"]["kind"], note["data"]["article"]["public"]) == ("note", False)
    assert created["occurred_at"].endswith("Z")
    assert all(
        p["id"] == r.idempotency_key for p, r in zip(payloads(happ), rows(happ), strict=True)
    )
    escalated = next(
        p for p in payloads(happ, ticket_id=number) if p["event"] == "ticket.escalated"
    )
    assert escalated["data"]["team"] == "PX" and escalated["ticket"]["level"] == 2


def test_a_backfilled_ticket_is_marked_imported(happ: App) -> None:
    raw_id = accept(happ.sessions, mail(ANA, "Caso de 2019", "Del archivo."), "backfill")
    number = happ.desk.ingest(raw_id).ticket_id
    [created] = payloads(happ, ticket_id=number)
    assert (created["event"], created["data"]["imported"]) == ("ticket.created", True)
    new_ticket(happ, subject="Hoy")
    assert "imported" not in payloads(happ)[-1]["data"]


def test_each_hook_gets_only_the_events_it_asked_for(tmp_path: Path, db_url: str) -> None:
    app = hooks_app(
        tmp_path, db_url, hook("created", events=["ticket.created"]), hook("everything")
    )
    number, _ = new_ticket(app)
    act(app, number, lambda s, t: actions.add_note(s, t, AGENT, "Revisar."))
    assert [r.event for r in rows(app, hook="created")] == ["ticket.created"]
    assert [r.event for r in rows(app, hook="everything")] == ["ticket.created", "article.added"]
    keys = [r.idempotency_key for r in rows(app)]
    assert len(set(keys)) == len(keys) == 3  # one key per delivery
    app.engine.dispose()


def test_no_hook_no_rows_and_an_unknown_event_stops_start_up(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'b.db'}"
    app = make_app(tmp_path, url)
    assert app.desk.webhooks is None
    new_ticket(app)
    assert rows(app) == []
    with pytest.raises(ConfigError, match="ticket.deleted"):
        hooks_app(tmp_path, url, hook("crm", events=["ticket.deleted"]))


def test_a_failed_change_leaves_no_delivery(happ: App) -> None:
    number, _ = new_ticket(happ)
    before = len(rows(happ))
    with pytest.raises(Exception, match="empty"):
        act(happ, number, lambda s, t: actions.add_note(s, t, AGENT, "   "))
    assert len(rows(happ)) == before


# --- delivery to a real receiver ---------------------------------------------------------------


def test_the_signature_verifies_with_the_hook_secret(happ: App, receiver: Receiver) -> None:
    number, _ = new_ticket(happ)
    counts = happ.deliver_webhooks(utcnow())
    assert counts == Counter(sent=1)
    [hit] = receiver.hits
    # What a receiver does (README): HMAC-SHA256 of the raw body under the shared secret.
    expected = "sha256=" + hmac.new(SECRET.encode(), hit.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(hit.headers["X-Buzon-Signature"], expected)
    [row] = rows(happ)
    assert hit.body == row.payload.encode()
    assert hit.headers["Content-Type"] == "application/json"
    assert hit.headers["X-Buzon-Event"] == "ticket.created"
    assert hit.headers["X-Buzon-Delivery"] == str(row.id)
    assert hit.headers["X-Buzon-Idempotency-Key"] == hit.json["id"] == row.idempotency_key
    assert hit.json["ticket"]["number"] == number
    assert (row.state, row.attempts, row.delivered_at is not None) == ("sent", 1, True)
    assert happ.deliver_webhooks(utcnow()) == Counter()  # nothing is sent twice


def test_a_receiver_answering_500_twice_gets_the_event_on_the_third_try(
    happ: App, receiver: Receiver
) -> None:
    receiver.answers = [500, 500]
    new_ticket(happ)
    t0 = utcnow()
    assert happ.deliver_webhooks(t0) == Counter(retry=1)
    assert happ.deliver_webhooks(t0 + timedelta(seconds=BASE - 1)) == Counter()  # not yet due
    [row] = rows(happ)
    assert (row.attempts, row.last_error) == (1, "HTTP 500 Internal Server Error")
    t1 = t0 + timedelta(seconds=BASE)
    assert happ.deliver_webhooks(t1) == Counter(retry=1)
    assert happ.deliver_webhooks(t1 + timedelta(seconds=2 * BASE - 1)) == Counter()  # doubled
    assert happ.deliver_webhooks(t1 + timedelta(seconds=2 * BASE)) == Counter(sent=1)
    assert len(receiver.hits) == 3
    assert len({h.body for h in receiver.hits}) == 1  # the very same body, key included
    [row] = rows(happ)
    assert (row.state, row.attempts, row.last_error) == ("sent", 3, None)


def test_dead_after_max_attempts_then_the_cli_brings_it_back(
    tmp_path: Path, receiver: Receiver
) -> None:
    db = f"sqlite:///{tmp_path / 'b.db'}"
    app = hooks_app(tmp_path, db, hook("crm", receiver.url()), max_attempts=2)
    receiver.answers = [503, 503]
    new_ticket(app)
    t0 = utcnow()
    assert app.deliver_webhooks(t0) == Counter(retry=1)
    assert app.deliver_webhooks(t0 + timedelta(hours=2)) == Counter(dead=1)
    assert app.deliver_webhooks(t0 + timedelta(days=9)) == Counter()  # dead stays dead
    sample = app.health.registry.get_sample_value
    assert sample("buzon_webhook_deliveries", {"state": "dead"}) == 1
    assert sample("buzon_webhooks_sent_total") == 0

    env = {"BUZON_DATABASE_URL": db}
    listed = buzon(["webhooks", "list", "--state", "dead", "--json"], tmp_path, **env)
    assert listed.returncode == 0, listed.stderr
    [dead] = json.loads(listed.stdout)
    assert (dead["state"], dead["attempts"], dead["event"]) == ("dead", 2, "ticket.created")
    assert dead["last_error"] == "HTTP 503 Service Unavailable"
    assert "payload" not in dead  # listings never show bodies

    retried = buzon(["webhooks", "retry", str(dead["id"])], tmp_path, **env)
    assert retried.returncode == 0, retried.stderr
    assert app.deliver_webhooks(utcnow()) == Counter(sent=1)
    assert sample("buzon_webhook_deliveries", {"state": "sent"}) == 1
    assert sample("buzon_webhooks_sent_total") == 1
    again = buzon(["webhooks", "retry", str(dead["id"])], tmp_path, **env)
    assert again.returncode == 65 and "already sent" in again.stderr
    both = buzon(["webhooks", "retry", "--dead", "1"], tmp_path, **env)
    assert both.returncode == 2
    app.engine.dispose()


def test_retry_dead_and_a_removed_hook(tmp_path: Path, receiver: Receiver) -> None:
    db = f"sqlite:///{tmp_path / 'b.db'}"
    old = hooks_app(tmp_path, db, hook("old", receiver.url()), hook("crm", receiver.url()))
    new_ticket(old)
    app = hooks_app(tmp_path, db, hook("crm", receiver.url()))  # "old" left the config
    assert app.deliver_webhooks(utcnow()) == Counter(sent=1, dead=1)
    [gone] = rows(app, hook="old")
    assert (gone.state, gone.last_error) == ("dead", "hook 'old' is no longer configured")
    assert [h.json["event"] for h in receiver.hits] == ["ticket.created"]
    with app.sessions.begin() as session:
        assert retry_dead(session, utcnow()) == 1
    assert app.deliver_webhooks(utcnow()) == Counter(dead=1)  # still not configured
    old.engine.dispose()
    app.engine.dispose()


def test_a_delivery_in_flight_is_not_retried_under_its_sender(happ: App) -> None:
    new_ticket(happ)
    [row] = rows(happ)
    now = utcnow()
    with happ.sessions.begin() as session:
        assert claim(session, row.id, "elsewhere", now, 60) is not None
    with pytest.raises(TicketError, match="being sent right now"), happ.sessions.begin() as s:
        retry(s, row.id, now)
    with happ.sessions.begin() as session:  # a claim that expired (its job died) is free
        assert retry(session, row.id, now + timedelta(seconds=61))["state"] == "pending"


def test_a_timeout_and_a_refused_connection_are_retried(tmp_path: Path, receiver: Receiver) -> None:
    db = f"sqlite:///{tmp_path / 'b.db'}"
    closed = f"http://127.0.0.1:{free_port()}/hook"
    app = hooks_app(
        tmp_path,
        db,
        hook("slow", receiver.url(), events=["ticket.created"]),
        hook("down", closed),
        timeout=0.3,
    )
    receiver.stall = 1.0
    new_ticket(app)
    assert app.deliver_webhooks(utcnow()) == Counter(retry=2)
    errors = {r.hook: r.last_error or "" for r in rows(app)}
    assert errors["slow"].startswith("timeout")
    assert errors["down"].startswith("ConnectError")
    app.engine.dispose()


def test_two_instances_send_each_delivery_once(happ: App, receiver: Receiver) -> None:
    for n in range(10):
        new_ticket(happ, subject=f"Caso {n}")
    targets = {h.name: Target(h.url, h.secret) for h in happ.settings.webhooks.hooks}
    now = utcnow()
    results: list[Counter[str]] = []

    def one(instance: str) -> None:
        policy = WebhookPolicy(instance=instance, retry_base_seconds=BASE)
        results.append(deliver_webhooks(happ.sessions, targets, now, policy))

    threads = [threading.Thread(target=one, args=(f"i{n}",)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sum(r["sent"] for r in results) == 10
    assert sorted(receiver.keys()) == sorted(r.idempotency_key for r in rows(happ))


# --- the API endpoints ---------------------------------------------------------------------


@contextmanager
def serving(web: Starlette) -> Iterator[httpx.Client]:
    """The routes on the daemon's own uvicorn server, on a free port, in a thread."""
    server = WebServer(web, "127.0.0.1", 0)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(target=loop.run_until_complete, args=(server.run(stop),))
    thread.start()
    try:
        wait_for(lambda: server.serving, 10, "the web server")
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as client:
            yield client
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()


def test_the_api_lists_dead_deliveries_and_retries_one(tmp_path: Path, receiver: Receiver) -> None:
    db = f"sqlite:///{tmp_path / 'b.db'}"
    app = hooks_app(tmp_path, db, hook("crm", receiver.url()), max_attempts=1)
    receiver.answers = [500]
    new_ticket(app)
    app.deliver_webhooks(utcnow())
    with app.sessions.begin() as session:
        token = tokens.create(session, app.catalogue, "agente@soporte.example", "t", utcnow()).token
    with serving(build(app.web_parts)) as client:
        path = "/api/v1/webhooks/deliveries"
        assert client.get(path, params={"state": "dead"}).status_code == 401  # no token
        client.headers["Authorization"] = f"Bearer {token}"
        listed = client.get(path, params={"state": "dead"})
        assert listed.status_code == 200
        [dead] = listed.json()["deliveries"]
        assert dead["last_error"] == "HTTP 500 Internal Server Error"
        assert client.get(f"{path}?state=lost").status_code == 400
        retried = client.post(f"{path}/{dead['id']}/retry")
        assert retried.status_code == 200 and retried.json()["state"] == "pending"
        assert client.post(f"{path}/999/retry").status_code == 404
        app.deliver_webhooks(utcnow())
        sent = client.post(f"{path}/{dead['id']}/retry")
        assert sent.status_code == 409
    app.engine.dispose()


# --- at least once across a SIGKILL -----------------------------------------------------------


@contextmanager
def running(config: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "daemon", "--config", str(config), "run"],
            cwd=ROOT,
            stdout=out,
            stderr=out,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.mark.slow
def test_sigkill_mid_delivery_loses_nothing_and_the_key_tells_the_repeat(
    tmp_path: Path, receiver: Receiver
) -> None:
    smtp_port, http_port = free_port(), free_port()
    db = f"sqlite:///{tmp_path / 'b.db'}"
    config = write_config(
        tmp_path / "buzon.toml",
        tmp_path / "data",
        db,
        smtp_port,
        extra=(
            f'[http]\nlisten = "127.0.0.1:{http_port}"\n'
            "[webhooks]\ntimeout = 2.0\ninterval_seconds = 0.2\nretry_base_seconds = 1.0\n"
            f'[[webhooks.hooks]]\nname = "crm"\nurl = "{receiver.url()}"\nsecret = "{SECRET}"\n'
        ),
    )
    log = tmp_path / "buzon.log"
    receiver.stall = 1.0  # every answer waits: buzón is killed while one is in flight
    with running(config, log) as proc:
        ready = lambda: proc.poll() is not None or http_get(http_port, "/readyz")[0] == 200  # noqa: E731
        wait_for(ready, 60, "buzón ready")
        assert proc.poll() is None, log.read_text()[-2000:]
        for n in range(4):
            send_mail(smtp_port, f"Caso {n}")
        receiver.wait_hits(2)  # the first was answered; the second is waiting for its answer
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    receiver.stall = 0.0

    engine = create_engine(db)

    def stored() -> dict[str, str]:
        with engine.connect() as conn:
            result = conn.execute(text("SELECT idempotency_key, state FROM webhook_deliveries"))
            return {key: state for key, state in result}

    with running(config, log) as proc:
        # The killed instance's claim expires (3 × timeout + 10 s), then the row goes again.
        wait_for(
            lambda: len(stored()) == 4 and set(stored().values()) == {"sent"},
            60,
            f"every delivery sent ({stored()})",
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    engine.dispose()
    received = Counter(receiver.keys())
    assert set(received) == set(stored())  # every event arrived, none unknown
    # At least once: the delivery in flight at the kill came again after the restart,
    # with the same key (the receiver tells the repeat); nothing else came twice.
    in_flight = receiver.hits[1].headers["X-Buzon-Idempotency-Key"]
    assert {key for key, n in received.items() if n > 1} == {in_flight}
    assert received[in_flight] == 2
    bodies = {h.headers["X-Buzon-Idempotency-Key"]: h.body for h in receiver.hits}
    assert len(bodies) == 4
