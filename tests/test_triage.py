"""Triage at intake, through the real SMTP listener and the real outbox: spam is kept and
never answered (and can be released), urgent cases and addresses are routed, a backfill
tells nobody, a merged ticket's replies land on the survivor."""

from __future__ import annotations

import mailbox
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from daemon.wiring import App
from tests.fixtures.smtp_listener import SmtpServer, serve_smtp
from tests.fixtures.smtp_sink import Received, SmtpSink
from tests.helpers import (
    ANA,
    body,
    buzon,
    count,
    deliver,
    free_port,
    ingest,
    parsed,
    relay_app,
)
from tests.mailbuilder import mail
from tickets import shaping
from tickets.models import Event, OutboxMessage, RawMessage, Ticket
from tickets.queries import list_tickets

SUPPORT = "soporte@soporte.example"
BILLING = "facturacion@soporte.example"
TRIAGE = "triaje@clinica.example"


@pytest.fixture
def triage_app(tmp_path: Path, db_url: str, sink: SmtpSink) -> Iterator[App]:
    app = relay_app(
        tmp_path,
        db_url,
        sink,
        support_addresses=[SUPPORT, BILLING],
        http={"listen": f"127.0.0.1:{free_port()}"},
        agent_mail={"notify": True},
        tickets={"triage_addresses": [TRIAGE]},
        routing={
            "queues": {BILLING: {"from_name": "Facturación", "signature": "Equipo de Facturación"}},
            "rules": [
                {"name": "facturacion", "to": [BILLING], "team": "facturacion",
                 "category": "billing"},
            ],
        },
    )  # fmt: skip
    yield app
    app.engine.dispose()


def send(server: SmtpServer, raw: bytes, to: str = SUPPORT) -> None:
    with server.client() as client:
        client.sendmail("cliente@correo.example", [to], raw)
    server.wait_processed()


def test_spam_is_kept_unanswered_counted_and_can_be_released(
    triage_app: App, sink: SmtpSink
) -> None:
    flagged = mail(ANA, "Gane dinero", "Haga clic aquí.", headers={"X-Spam-Flag": "YES"})
    rejected = mail(
        "Ofertas <ventas@ofertas.example>", "Oferta", "Compre ya.",
        headers={"X-Rspamd-Action": "reject"},
    )  # fmt: skip
    with serve_smtp(triage_app) as server:
        send(server, flagged)
        send(server, rejected)
    assert count(triage_app, Ticket) == 0 and count(triage_app, OutboxMessage) == 0
    with triage_app.sessions() as session:
        rows = session.execute(select(RawMessage.id, RawMessage.state, RawMessage.reason)).all()
    assert [(state, reason) for _, state, reason in rows] == [
        ("spam", "spam: SpamAssassin: X-Spam-Flag YES"),
        ("spam", "spam: Rspamd: action reject"),
    ]
    assert _metric(triage_app, 'buzon_raw_messages{source="smtp",state="spam"}') == 2.0
    released = buzon(
        ["inbound", "release", str(rows[0][0])],
        Path(triage_app.settings.data_dir).parent,
        BUZON_DATABASE_URL=triage_app.settings.db_url,
        BUZON_SUPPORT_ADDRESSES=f'["{SUPPORT}", "{BILLING}"]',
        BUZON_AGENT_MAIL__NOTIFY="true",
        BUZON_TICKETS__TRIAGE_ADDRESSES=f'["{TRIAGE}"]',
    )
    assert released.returncode == 0, released.stderr
    assert released.stdout.startswith(f"raw message {rows[0][0]}: processed ticket #")
    assert count(triage_app, Ticket) == 1
    deliver(triage_app)
    assert sorted(m.rcpt_tos for m in sink.messages) == [("ana@clinica.example",), (TRIAGE,)]


def _metric(app: App, name: str) -> float:
    from daemon.health import Health  # the real registry, read as Prometheus would

    text = Health(app.sessions).registry
    for metric in text.collect():
        for sample in metric.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            if f"{sample.name}{{{labels}}}" == name:
                return float(sample.value)
    return 0.0


def test_urgent_words_and_the_billing_address_route_new_tickets(
    triage_app: App, sink: SmtpSink
) -> None:
    with serve_smtp(triage_app) as server:
        send(server, mail(ANA, "Cita", "Quiero una cita para mi hija."))
        send(server, mail(ANA, "Ayuda", "Mi hija tiene un SANGRADO que no para."))
        send(server, mail(ANA, "Cobro", "Me cobraron dos veces.", to=BILLING), to=BILLING)
    with triage_app.sessions() as session:
        earlier, urgent, billing = session.scalars(select(Ticket).order_by(Ticket.id)).all()
        assert (urgent.category, urgent.priority) == ("urgent_emergency", "P1")
        assert urgent.tags == ["urgente"]
        assert [t["number"] for t in list_tickets(session, tag="URGENTE")] == [urgent.id]
        assert urgent.queue_address == SUPPORT
        assert (billing.team, billing.category, billing.queue_address) == (
            "facturacion", "billing", BILLING,
        )  # fmt: skip
        routed = session.scalars(select(Event).where(Event.kind == "routed")).all()
        assert [e.data["rules"] for e in routed] == [["urgent_emergency"], ["facturacion"]]
        urgent_number, earlier_number = urgent.id, earlier.id
        # P1 targets: the first response is due within the hour of business time
        assert urgent.first_response_due_at is not None
        assert billing.first_response_due_at is not None
        assert urgent.first_response_due_at < billing.first_response_due_at
        billing_number = billing.id
    # The triage address hears of the urgent case at once, with the requester's other
    # open ticket as a possible duplicate (seed 003).
    deliver(triage_app)
    [notice] = [
        m for m in sink.messages
        if m.rcpt_tos == (TRIAGE,) and f"[#{urgent_number}]" in str(parsed(m)["Subject"])
    ]  # fmt: skip
    assert "Prioridad: P1" in _text(notice)
    assert f"Posibles duplicados: #{earlier_number}" in _text(notice)
    # The billing queue answers from its own address, name and signature.
    [ack] = [
        m for m in sink.messages
        if f"[#{billing_number}]" in str(parsed(m)["Subject"]) and m.rcpt_tos != (TRIAGE,)
    ]  # fmt: skip
    message = parsed(ack)
    assert message["From"].addresses[0].addr_spec == BILLING
    assert message["From"].addresses[0].display_name == "Facturación"
    assert message["Reply-To"].addresses[0].addr_spec.startswith("facturacion+")
    assert "Equipo de Facturación" in body(message)
    answer = mail(ANA, "Re: cobro", "Adjunto el comprobante.",
                  to=str(message["Reply-To"]), in_reply_to=str(message["Message-ID"]))  # fmt: skip
    assert ingest(triage_app, answer).ticket_id == billing_number


def test_a_backfill_of_real_mail_queues_no_mail_unless_asked(tmp_path: Path, corpus: Path) -> None:
    box = mailbox.mbox(str(tmp_path / "old.mbox"))
    people = sorted((corpus / "django-helpdesk").rglob("*.eml"))[:40]
    for path in people:
        box.add(path.read_bytes())
    box.flush()
    done = buzon(["ingest", "--mbox", str(tmp_path / "old.mbox")], tmp_path)
    assert done.returncode == 0, done.stderr
    listed = buzon(["outbox", "list"], tmp_path)
    assert listed.stdout.strip() == "no mails"
    assert "processed" in done.stdout  # tickets were opened, silently
    again = buzon(["ingest", "--mbox", str(tmp_path / "old.mbox"), "--notify"], tmp_path)
    assert again.returncode == 0  # duplicates now: still nothing to send
    new_box = mailbox.mbox(str(tmp_path / "new.mbox"))
    new_box.add(mail(ANA, "Hoy", "Hola, escribo hoy."))
    new_box.flush()
    buzon(["ingest", "--mbox", str(tmp_path / "new.mbox"), "--notify"], tmp_path)
    assert buzon(["outbox", "list"], tmp_path).stdout.count("acknowledgement") == 1


def _text(item: Received) -> str:
    return body(parsed(item))


def test_replies_to_either_merged_ticket_land_on_the_survivor(
    triage_app: App, sink: SmtpSink
) -> None:
    first = ingest(triage_app, mail(ANA, "No puedo entrar", "Contraseña inválida."))
    second = ingest(triage_app, mail("Luis <luis@correo.example>", "Portal", "No carga."))
    assert first.ticket_id is not None and second.ticket_id is not None
    survivor, other = first.ticket_id, second.ticket_id
    triage_app.desk.act(survivor, lambda s, t: shaping.merge(s, t, "maria", other))
    deliver(triage_app)
    merged = [m for m in sink.messages if "las unimos" in _text(m)]
    assert [set(m.rcpt_tos) for m in merged] == [{"ana@clinica.example", "luis@correo.example"}]
    assert str(parsed(merged[0])["Subject"]).startswith(f"[#{survivor}] ")
    with triage_app.sessions() as session:
        old_ack = session.scalar(
            select(OutboxMessage.message_id).where(OutboxMessage.kind == "acknowledgement")
            .order_by(OutboxMessage.id.desc())
        )  # fmt: skip
        closed = session.get(Ticket, other)
        assert closed is not None and closed.status == "closed"
        assert closed.merged_into_id == survivor
    reply = mail("Luis <luis@correo.example>", "Re: Portal", "Sigue igual.",
                 in_reply_to=f"<{old_ack}>")  # fmt: skip
    assert ingest(triage_app, reply).ticket_id == survivor
