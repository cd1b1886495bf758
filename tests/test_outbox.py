"""The outbox's delivery job against a real SMTP sink: retries, bounces, races, TLS."""

from __future__ import annotations

import ssl
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
import trustme
from sqlalchemy import select

from daemon.wiring import App
from notifier import outbox
from notifier.delivery import DeliveryPolicy, deliver_due
from notifier.transports import SendResult, SmtpTransport
from tests.fixtures.smtp_sink import SmtpSink
from tests.helpers import (
    AGENT,
    LUIS,
    act,
    count,
    deliver,
    events,
    new_ticket,
    parsed,
    relay_app,
)
from tickets import actions
from tickets.models import MailAddress, OutboxMessage, utcnow


def rows(app: App) -> list[OutboxMessage]:
    with app.sessions() as s:
        return list(s.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


def test_relay_down_for_a_while_then_each_mail_is_delivered_exactly_once(
    tmp_path: Path,
    db_url: str,
    sink: SmtpSink,
) -> None:
    app = relay_app(tmp_path, db_url, sink, outbound={"retry_base_seconds": 60})
    number, _ = new_ticket(app, cc=LUIS)
    act(app, number, lambda s, t: actions.set_status(s, t, "in_progress", AGENT))
    sink.stop()

    t0 = utcnow()
    assert deliver(app, t0) == Counter(retry=2)
    for row in rows(app):
        assert (row.state, row.attempts) == ("pending", 1)
        assert row.next_attempt_at == t0 + timedelta(seconds=60)
        assert "unavailable" in (row.last_error or "")
    assert deliver(app, t0 + timedelta(seconds=30)) == Counter()  # backing off
    t1 = t0 + timedelta(seconds=61)
    assert deliver(app, t1) == Counter(retry=2)
    assert {r.next_attempt_at for r in rows(app)} == {t1 + timedelta(seconds=120)}

    sink.start()  # the relay is back, on the same port
    assert deliver(app, t1 + timedelta(seconds=60)) == Counter()  # still waiting
    assert deliver(app, t1 + timedelta(seconds=121)) == Counter(sent=2)
    assert deliver(app, t1 + timedelta(days=1)) == Counter()
    ids = [parsed(m)["Message-ID"] for m in sink.messages]
    assert len(ids) == 2 and len(set(ids)) == 2
    assert {f"<{r.message_id}>" for r in rows(app)} == set(ids)  # fixed when written
    assert [(r.state, r.attempts) for r in rows(app)] == [("sent", 3), ("sent", 3)]
    app.engine.dispose()


def test_permanent_refusal_marks_bouncing_and_is_not_retried(
    tmp_path: Path,
    db_url: str,
    sink: SmtpSink,
) -> None:
    app = relay_app(tmp_path, db_url, sink)
    sink.refuse["ana@clinica.example"] = "550 5.1.1 <ana@clinica.example>: no such user"
    number, _ = new_ticket(app)
    assert deliver(app) == Counter(failed=1)
    [row] = rows(app)
    assert row.state == "failed" and "550 5.1.1" in (row.last_error or "")
    assert deliver(app, utcnow() + timedelta(days=2)) == Counter()  # never again
    assert sink.messages == []
    with app.sessions() as s:
        address = s.get(MailAddress, "ana@clinica.example")
        assert address is not None and address.bouncing
        assert "5.1.1" in (address.bounce_reason or "")
    # Later mail skips the bouncing address and says why in the history.
    act(app, number, lambda s, t: actions.set_status(s, t, "in_progress", AGENT))
    assert count(app, OutboxMessage) == 1
    assert [e.data["reason"] for e in events(app, number, "notify_refused")] == ["bouncing"]
    app.engine.dispose()


def test_one_refused_recipient_does_not_stop_or_double_the_others(
    tmp_path: Path,
    db_url: str,
    sink: SmtpSink,
) -> None:
    app = relay_app(tmp_path, db_url, sink)
    sink.refuse["luis@clinica.example"] = "450 4.2.1 mailbox busy, try later"
    sink.refuse["marta@clinica.example"] = "550 5.1.1 unknown user"
    new_ticket(app, cc=f"{LUIS}, Marta <marta@clinica.example>")
    t0 = utcnow()
    assert deliver(app, t0) == Counter(retry=1)
    [row] = rows(app)
    assert row.recipients == ["luis@clinica.example"] and row.state == "pending"
    del sink.refuse["luis@clinica.example"]
    assert deliver(app, t0 + timedelta(hours=1)) == Counter(sent=1)
    assert [m.rcpt_tos for m in sink.messages] == [
        ("ana@clinica.example",),
        ("luis@clinica.example",),
    ]
    with app.sessions() as s:
        marta = s.get(MailAddress, "marta@clinica.example")
        assert marta is not None and marta.bouncing
        assert s.get(MailAddress, "luis@clinica.example") is None
    app.engine.dispose()


def test_message_rejected_at_data_fails_without_blaming_the_address(
    tmp_path: Path,
    db_url: str,
    sink: SmtpSink,
) -> None:
    app = relay_app(tmp_path, db_url, sink)
    sink.data_reply = "554 5.7.1 message content rejected"
    number, _ = new_ticket(app)
    assert deliver(app) == Counter(failed=1)
    assert count(app, MailAddress) == 0
    [event] = events(app, number, "delivery_failed")
    assert "554 5.7.1" in event.data["error"]
    app.engine.dispose()


class SlowTransport:
    """The real SMTP transport, slowed down so that two jobs overlap for sure."""

    def __init__(self, inner: SmtpTransport) -> None:
        self.inner = inner

    def send(self, mail_from: str, recipients: list[str], raw: bytes) -> SendResult:
        time.sleep(0.01)
        return self.inner.send(mail_from, recipients, raw)

    def close(self) -> None:
        self.inner.close()


def test_two_delivery_jobs_racing_send_each_mail_once(
    tmp_path: Path,
    db_url: str,
    sink: SmtpSink,
) -> None:
    app = relay_app(tmp_path, db_url, sink)
    for n in range(8):
        new_ticket(app, subject=f"Caso {n}")
    start = threading.Barrier(2)
    results: list[Counter[str]] = []

    def job(name: str) -> None:
        transport = SlowTransport(SmtpTransport("127.0.0.1", sink.port, security="none"))
        policy = DeliveryPolicy(instance=name, batch_size=50)
        start.wait()
        results.append(deliver_due(app.sessions, transport, utcnow(), policy))

    threads = [threading.Thread(target=job, args=(f"job-{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sum(r["sent"] for r in results) == 8
    ids = [parsed(m)["Message-ID"] for m in sink.messages]
    assert len(ids) == 8 and len(set(ids)) == 8
    assert all(r.state == "sent" for r in rows(app))
    app.engine.dispose()


def test_gives_up_after_max_attempts_then_an_operator_retries(
    tmp_path: Path,
    db_url: str,
    sink: SmtpSink,
) -> None:
    app = relay_app(tmp_path, db_url, sink, outbound={"max_attempts": 2, "retry_base_seconds": 1})
    number, _ = new_ticket(app)
    sink.stop()
    t0 = utcnow()
    assert deliver(app, t0) == Counter(retry=1)
    assert deliver(app, t0 + timedelta(seconds=5)) == Counter(failed=1)
    [row] = rows(app)
    assert row.state == "failed" and "gave up after 2 attempts" in (row.last_error or "")
    assert count(app, MailAddress) == 0  # the relay's outage is not the address's fault
    sink.start()
    with app.sessions.begin() as s:
        outbox.retry(s, row.id, t0 + timedelta(seconds=6))
    assert deliver(app, t0 + timedelta(seconds=6)) == Counter(sent=1)
    assert len(sink.messages) == 1
    assert events(app, number, "delivery_failed")
    app.engine.dispose()


@pytest.fixture
def tls_sink(tmp_path: Path) -> tuple[SmtpSink, Path]:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    sink = SmtpSink(tls_context=server, users={"buzon": "s3creto"})
    sink.start()
    yield sink, ca_file  # type: ignore[misc]
    sink.stop()


def test_starttls_and_auth_against_the_relay(
    tmp_path: Path, tls_sink: tuple[SmtpSink, Path]
) -> None:
    sink, ca_file = tls_sink
    app = relay_app(
        tmp_path,
        f"sqlite:///{tmp_path / 'b.db'}",
        sink,
        outbound={
            "security": "starttls",
            "user": "buzon",
            "password": "s3creto",
            "ca_file": str(ca_file),
        },
    )
    new_ticket(app)
    assert deliver(app) == Counter(sent=1)
    assert len(sink.messages) == 1
    # Wrong password: our configuration, so the mail waits rather than failing.
    bad = SmtpTransport(
        "127.0.0.1", sink.port, security="starttls", user="buzon", password="otra", ca_file=ca_file
    )
    new_ticket(app, subject="Otro caso")
    assert deliver_due(app.sessions, bad, utcnow()) == Counter(retry=1)
    [_, row] = rows(app)
    assert "login" in (row.last_error or "") and "otra" not in (row.last_error or "")
    app.engine.dispose()
