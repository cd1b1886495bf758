"""Status emails through the outbox to a real SMTP sink, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
from collections import Counter
from datetime import timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from daemon.wiring import App
from parsers.thread_keys import ticket_from_address, ticket_from_message_id
from tests.fixtures.smtp_sink import SmtpSink
from tests.helpers import (
    AGENT,
    ANA,
    LUIS,
    MARTA,
    act,
    body,
    count,
    deliver,
    events,
    ingest,
    new_ticket,
    parsed,
    relay_app,
)
from tests.mailbuilder import mail, message_id
from tickets import actions
from tickets.blobstore import BlobStore
from tickets.models import (
    Article,
    MailAddress,
    OutboxMessage,
    OutboxRecipient,
    Ticket,
    utcnow,
)

# --- acknowledgement ------------------------------------------------------------------------


def test_acknowledgement_reaches_requester_and_ccd_colleagues(
    rapp: App,
    sink: SmtpSink,
) -> None:
    number, raw = new_ticket(rapp, cc=f"{LUIS}, {MARTA}, Soporte <ayuda@soporte.example>")
    assert deliver(rapp)["sent"] == 1

    [item] = sink.messages
    assert sorted(item.rcpt_tos) == [
        "ana@clinica.example",
        "luis@clinica.example",
        "marta@clinica.example",
    ]
    assert item.mail_from == "soporte@soporte.example"
    msg = parsed(item)
    assert msg["To"].addresses[0].addr_spec == "ana@clinica.example"
    assert {a.addr_spec for a in msg["Cc"].addresses} == {
        "luis@clinica.example",
        "marta@clinica.example",
    }
    # The ticket's one subject (it answers the customer's mail: "Re: "), and the
    # Outlook conversation headers.
    assert msg["Subject"] == f"Re: [#{number}] No puedo agendar citas"
    assert msg["Thread-Topic"] == f"[#{number}] No puedo agendar citas"
    assert len(base64.b64decode(msg["Thread-Index"])) == 27  # 22-byte root + one child
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["X-Auto-Response-Suppress"] == "All"
    assert msg["In-Reply-To"] == message_id(raw)
    assert msg["References"] == message_id(raw)
    reply_to = msg["Reply-To"].addresses[0].addr_spec
    assert ticket_from_address(rapp.policy.secret, reply_to) == number
    our_id = msg["Message-ID"].strip("<>")
    assert our_id.endswith("@soporte.example")
    assert ticket_from_message_id(rapp.policy.secret, our_id) == number
    text = body(msg)
    assert f"número {number}" in text and "Enviado" in text
    assert "factura" in text and "URL" in text and "capturas de pantalla" in text
    # The thread is complete: the acknowledgement is an outbound article.
    with rapp.sessions() as s:
        kinds = [(a.kind, a.message_id) for a in s.scalars(select(Article).order_by(Article.id))]
    assert kinds[-1] == ("outbound", our_id)


def test_acknowledgement_in_english_keeps_every_character(
    rapp: App,
    sink: SmtpSink,
) -> None:
    raw = mail(
        "José Müller <jose@clinic.example>",
        "Cannot book appointments for Zoë",
        "Hello, since yesterday the calendar does not let me book any appointment. "
        "Could you please help me? Thank you very much, I look forward to your answer.",
    )
    number = ingest(rapp, raw).ticket_id
    with rapp.sessions.begin() as s:
        ticket = s.get(Ticket, number)
        assert ticket is not None
        ticket.language = "en"  # the parser's guess is not what this test is about
    act(rapp, number, lambda s, t: actions.set_status(s, t, "in_progress", AGENT))
    deliver(rapp)
    ack, status = (parsed(m) for m in sink.messages)
    assert "Müller" not in ack["Subject"]  # (subject is the ticket's, name is in To)
    assert ack["To"].addresses[0].display_name == "José Müller"
    assert ack["Subject"] == f"Re: [#{number}] Cannot book appointments for Zoë"
    assert status["Subject"] == f"[#{number}] Cannot book appointments for Zoë"
    assert 'is now "In progress"' in body(status)
    assert "An agent has taken the request" in body(status)
    assert "Hello José Müller," in body(status)
    # On the wire: RFC 2047 words and quoted-printable, nothing raw 8-bit.
    assert all(b < 128 for b in sink.messages[1].data)


def test_spanish_status_mail_has_accents_intact(rapp: App, sink: SmtpSink) -> None:
    number, _ = new_ticket(rapp, subject="Facturación: no aparece el pago de la cita")
    act(rapp, number, lambda s, t: actions.set_status(s, t, "waiting_on_customer", AGENT))
    deliver(rapp)
    status = sink.messages[-1]
    assert all(b < 128 for b in status.data)
    assert b"quoted-printable" in status.data
    msg = parsed(status)
    assert msg["Subject"] == f"[#{number}] Facturación: no aparece el pago de la cita"
    assert msg.get_content_charset() == "utf-8"
    text = body(msg)
    assert "pasó a «A la espera de tu respuesta»" in text
    assert "una captura de pantalla o algún\narchivo" in text
    assert msg["Content-Language"] == "es"


# --- status changes, replies, assignment ---------------------------------------------------


def test_status_change_is_mailed_once_even_if_delivery_runs_twice(
    rapp: App,
    sink: SmtpSink,
) -> None:
    number, raw = new_ticket(rapp, cc=LUIS)
    act(rapp, number, lambda s, t: actions.set_status(s, t, "in_progress", AGENT, "lo tomo"))
    assert deliver(rapp) == Counter(sent=2)
    assert deliver(rapp) == Counter()
    ack, status = (parsed(m) for m in sink.messages)
    assert len(sink.messages) == 2
    assert status["Auto-Submitted"] == "auto-generated"
    assert status["X-Auto-Response-Suppress"] == "All"
    assert status["Subject"] == f"[#{number}] No puedo agendar citas"  # the status is in the body
    assert "pasó a «En curso»" in body(status)
    assert status["Thread-Topic"] == ack["Thread-Topic"] == f"[#{number}] No puedo agendar citas"
    # Outlook's conversation: the same 22-byte root, a child block of its own.
    ack_index, status_index = (base64.b64decode(m["Thread-Index"]) for m in (ack, status))
    assert ack_index[:22] == status_index[:22] and ack_index != status_index
    # Continues the thread: after the acknowledgement, which followed the customer's mail.
    assert status["In-Reply-To"] == ack["Message-ID"]
    assert status["References"].split() == [message_id(raw), ack["Message-ID"]]
    assert "lo tomo" not in body(status)  # the --note is for agents only


def test_agent_reply_with_attachment_is_not_automatic(
    rapp: App,
    sink: SmtpSink,
    tmp_path: Path,
) -> None:
    number, _ = new_ticket(rapp, cc=LUIS)
    pdf = actions.NewAttachment("guía rápida.pdf", "application/pdf", b"%PDF-1.4 fake")
    blobs = BlobStore(rapp.settings.attachments_dir)
    act(
        rapp,
        number,
        lambda s, t: actions.reply(
            s,
            t,
            AGENT,
            "Hola Ana:\n\nYa está corregido. Te adjunto la guía.\n\nMaría",
            attachments=[pdf],
            blobs=blobs,
            status="resolved",
        ),
    )
    deliver(rapp)
    item = sink.messages[-1]
    assert sorted(item.rcpt_tos) == ["ana@clinica.example", "luis@clinica.example"]
    msg = parsed(item)
    assert msg["Auto-Submitted"] is None and msg["X-Auto-Response-Suppress"] is None
    assert msg["Subject"] == f"Re: [#{number}] No puedo agendar citas"
    # The agent's name, the support address: answers still reach the desk.
    assert msg["From"].addresses[0].display_name == f"{AGENT} (Soporte)"
    assert msg["From"].addresses[0].addr_spec == "soporte@soporte.example"
    text = body(msg)
    assert text.startswith("Hola Ana:\n\nYa está corregido.")
    assert "Estado del ticket: «Resuelto»" in text
    [attachment] = list(msg.iter_attachments())
    assert attachment.get_filename() == "guía rápida.pdf"
    assert attachment.get_content() == b"%PDF-1.4 fake"
    with rapp.sessions() as s:
        ticket = s.get(Ticket, number)
        assert ticket is not None and ticket.first_response_at is not None
        assert ticket.status == "resolved"
        reply = s.scalars(
            select(Article).where(Article.ticket_id == number, Article.author == AGENT)
        ).one()
        assert reply.kind == "outbound" and reply.message_id == msg["Message-ID"].strip("<>")
        assert [f.filename for f in reply.attachments] == ["guía rápida.pdf"]
    # One mail for the reply and its status: not a separate "Resuelto" notification.
    assert count(rapp, OutboxMessage) == 2


def test_assignment_tells_who_handles_it_in_one_mail(
    rapp: App,
    sink: SmtpSink,
) -> None:
    number, _ = new_ticket(rapp)
    act(rapp, number, lambda s, t: actions.assign(s, t, AGENT, agent="María López", team="PX"))
    deliver(rapp)
    assert len(sink.messages) == 2
    msg = parsed(sink.messages[-1])
    assert "está a cargo de María López, del equipo PX" in body(msg)
    assert "Estado actual: «En curso»" in body(msg)
    with rapp.sessions() as s:
        ticket = s.get(Ticket, number)
        assert ticket is not None
        assert (ticket.assignee, ticket.team, ticket.status) == ("María López", "PX", "in_progress")


def test_notes_and_escalations_are_never_mailed(
    rapp: App,
    sink: SmtpSink,
) -> None:
    number, _ = new_ticket(rapp, cc=LUIS)
    act(rapp, number, lambda s, t: actions.set_status(s, t, "in_progress", AGENT))
    before = count(rapp, OutboxMessage)
    act(rapp, number, lambda s, t: actions.add_note(s, t, AGENT, "Cliente VIP: llamar."))
    act(
        rapp,
        number,
        lambda s, t: actions.escalate(
            s,
            t,
            AGENT,
            team="Nutrición",
            reason="Quiere cambiar su dieta",
            escalation_type="appointment",
        ),
    )
    act(rapp, number, lambda s, t: actions.set_priority(s, t, AGENT, impact="high", urgency="high"))
    assert count(rapp, OutboxMessage) == before
    deliver(rapp)
    for item in sink.messages:
        assert b"VIP" not in item.data and b"dieta" not in item.data


# --- who never gets mail ----------------------------------------------------------------------


def test_no_mail_to_bouncing_noreply_or_our_own_addresses(
    rapp: App,
    sink: SmtpSink,
) -> None:
    with rapp.sessions.begin() as s:
        s.add(MailAddress(email="luis@clinica.example", bouncing=True))
    number, _ = new_ticket(
        rapp, cc=f"{LUIS}, no-reply@clinica.example, Postmaster <postmaster@clinica.example>"
    )
    deliver(rapp)
    [item] = sink.messages
    assert item.rcpt_tos == ("ana@clinica.example",)
    refused = {
        (e.data["recipient"], e.data["reason"]) for e in events(rapp, number, "notify_refused")
    }
    assert refused == {
        ("luis@clinica.example", "bouncing"),
        ("no-reply@clinica.example", "no_reply"),
        ("postmaster@clinica.example", "no_reply"),
    }


def test_customers_own_reply_is_not_echoed_back_to_them(
    rapp: App,
    sink: SmtpSink,
) -> None:
    number, raw = new_ticket(rapp, cc=LUIS)
    act(rapp, number, lambda s, t: actions.set_status(s, t, "waiting_on_customer", AGENT))
    deliver(rapp)
    answer = mail(
        ANA,
        f"Re: [#{number}] No puedo agendar citas",
        "Adjunto la captura.",
        in_reply_to=message_id(raw),
        cc=LUIS,
    )
    assert ingest(rapp, answer).ticket_id == number
    deliver(rapp)
    last = sink.messages[-1]
    # Luis hears the ticket is in progress again; Ana, who caused it, gets no echo.
    assert last.rcpt_tos == ("luis@clinica.example",)
    assert parsed(last)["Subject"] == f"[#{number}] No puedo agendar citas"
    # ... addressed as the colleague he is, and told it was Ana's answer, not an agent.
    text = body(parsed(last))
    assert text.startswith("Hola Luis Gómez:")
    assert "El ticket [#1] «No puedo agendar citas», de Ana Pérez, pasó a «En curso»" in text
    assert "Recibimos la respuesta de Ana Pérez" in text
    assert "tu solicitud" not in text and "Un agente ha tomado" not in text


def test_mailing_list_and_auto_replies_open_nothing_and_get_nothing(
    rapp: App,
    sink: SmtpSink,
) -> None:
    listed = mail(
        "Boletín <news@lista.example>",
        "Novedades de marzo",
        "Hola a todos",
        headers={"List-Id": "<novedades.lista.example>", "Precedence": "list"},
    )
    auto = mail(
        "Pedro <pedro@clinica.example>",
        "Fuera de la oficina",
        "Vuelvo el lunes.",
        headers={"Auto-Submitted": "auto-replied"},
    )
    assert ingest(rapp, listed).state == "ignored"
    assert ingest(rapp, auto).state == "ignored"
    assert count(rapp, Ticket) == 0 and count(rapp, OutboxMessage) == 0


# Recent: a mail written long ago would open its ticket without an acknowledgement.
RECENT = format_datetime(utcnow() - timedelta(hours=1)).encode()


def test_header_injection_through_the_subject_is_defused(
    rapp: App,
    sink: SmtpSink,
) -> None:
    # An encoded word decodes to CR/LF (the parser already flattens it) ...
    raw = (
        b"From: Eve <eve@mal.example>\r\nTo: soporte@soporte.example\r\n"
        b"Subject: =?utf-8?q?Hola=0D=0ABcc:_victima@otro.example=0D=0A=0D=0Acuerpo?=\r\n"
        b"Message-ID: <inj-1@mal.example>\r\nDate: " + RECENT + b"\r\n\r\nHola\r\n"
    )
    number = ingest(rapp, raw).ticket_id
    assert number is not None
    # ... and the notifier does not rely on that: CR/LF straight in the stored values.
    with rapp.sessions.begin() as s:
        ticket = s.get(Ticket, number)
        assert ticket is not None
        ticket.subject = "Hola\r\nBcc: victima@otro.example\r\n\r\ncuerpo"
        ticket.participants[0].name = "Eve\r\nCc: otra@otro.example"
    act(rapp, number, lambda s, t: actions.set_status(s, t, "in_progress", AGENT))
    deliver(rapp)
    assert [m.rcpt_tos for m in sink.messages] == [("eve@mal.example",)] * 2
    for item in sink.messages:
        msg = parsed(item)
        assert msg["Bcc"] is None and msg["Cc"] is None
        assert "\n" not in msg["Subject"] and "\r" not in msg["Subject"]
        assert "Bcc: victima@otro.example" in msg["Subject"]  # kept as text, on one line
        header_block = item.data.split(b"\r\n\r\n", 1)[0]
        names = [line.split(b":")[0].lower() for line in header_block.split(b"\r\n")]
        assert b"bcc" not in names and b"cc" not in names


# --- the budget ---------------------------------------------------------------------------------


def test_send_budget_stops_mail_beyond_the_limit_and_records_it(
    tmp_path: Path,
    db_url: str,
    sink: SmtpSink,
) -> None:
    app = relay_app(
        tmp_path, db_url, sink, outbound={"budget_per_recipient": 3, "budget_per_ticket": 100}
    )
    number, _ = new_ticket(app)  # 1: acknowledgement
    for status in ("in_progress", "on_hold", "in_progress", "waiting_on_customer"):
        act(app, number, lambda s, t, st=status: actions.set_status(s, t, st, AGENT))
    deliver(app)
    assert len(sink.messages) == 3
    assert count(app, OutboxRecipient, OutboxRecipient.email == "ana@clinica.example") == 3
    refusals = events(app, number, "notify_refused")
    assert [(e.data["recipient"], e.data["reason"]) for e in refusals] == [
        ("ana@clinica.example", "budget_recipient")
    ] * 2
    # A person's answer is not automatic mail: the budget never silences an agent.
    act(app, number, lambda s, t: actions.reply(s, t, AGENT, "Seguimos con ello."))
    deliver(app)
    assert len(sink.messages) == 4
    app.engine.dispose()


def test_per_ticket_budget_counts_every_recipient(
    tmp_path: Path,
    db_url: str,
    sink: SmtpSink,
) -> None:
    app = relay_app(
        tmp_path, db_url, sink, outbound={"budget_per_recipient": 100, "budget_per_ticket": 3}
    )
    number, _ = new_ticket(app, cc=LUIS)  # 2 recipient rows
    act(app, number, lambda s, t: actions.set_status(s, t, "in_progress", AGENT))  # 1 more
    deliver(app)
    assert [m.rcpt_tos for m in sink.messages] == [
        ("ana@clinica.example", "luis@clinica.example"),
        ("ana@clinica.example",),
    ]
    assert [e.data["reason"] for e in events(app, number, "notify_refused")] == ["budget_ticket"]
    app.engine.dispose()


# --- operators' templates -----------------------------------------------------------------------


def test_operator_templates_override_the_built_in_ones(
    tmp_path: Path, db_url: str, sink: SmtpSink
) -> None:
    overrides = tmp_path / "plantillas"
    (overrides / "es").mkdir(parents=True)
    (overrides / "es" / "acknowledgement.body.txt").write_text(
        "Hemos recibido tu caso {{ tag }}: {{ subject }}\n", encoding="utf-8"
    )
    # A subject template of an older version is no longer read: the subject is the
    # ticket's own, whatever an override says, so that every client threads.
    (overrides / "es" / "acknowledgement.subject.txt").write_text("Otro asunto\n")
    app = relay_app(tmp_path, db_url, sink, outbound={"templates_dir": str(overrides)})
    number, _ = new_ticket(app)
    deliver(app)
    msg = parsed(sink.messages[0])
    assert msg["Subject"] == f"Re: [#{number}] No puedo agendar citas"
    assert body(msg) == f"Hemos recibido tu caso [#{number}]: No puedo agendar citas\n"
    act(app, number, lambda s, t: actions.set_status(s, t, "in_progress", AGENT))
    deliver(app)
    assert "factura" not in body(parsed(sink.messages[1]))  # the others are built-in
    assert "pasó a «En curso»" in body(parsed(sink.messages[1]))
    app.engine.dispose()


def test_a_template_failing_at_render_time_loses_neither_mail_nor_change(
    tmp_path: Path, db_url: str, sink: SmtpSink
) -> None:
    overrides = tmp_path / "plantillas"
    (overrides / "es").mkdir(parents=True)
    (overrides / "es" / "status.body.txt").write_text("{{ no_such_value }}\n")
    app = relay_app(tmp_path, db_url, sink, outbound={"templates_dir": str(overrides)})
    number, _ = new_ticket(app)
    act(app, number, lambda s, t: actions.set_status(s, t, "in_progress", AGENT))
    with app.sessions() as s:
        ticket = s.get(Ticket, number)
        assert ticket is not None and ticket.status == "in_progress"
    [error] = events(app, number, "notify_error")
    assert "no_such_value" in error.data["error"]
    assert count(app, OutboxMessage) == 1  # the acknowledgement only
    app.engine.dispose()


def test_a_template_with_a_syntax_error_stops_start_up(tmp_path: Path, sink: SmtpSink) -> None:
    from daemon.config import ConfigError

    overrides = tmp_path / "plantillas"
    (overrides / "en").mkdir(parents=True)
    (overrides / "en" / "reply.body.txt").write_text("{% if %}\n")
    with pytest.raises(
        ConfigError, match=r"outbound.templates_dir: template \S*/plantillas/en/reply.body.txt: "
    ):
        relay_app(
            tmp_path,
            f"sqlite:///{tmp_path / 'b.db'}",
            sink,
            outbound={"templates_dir": str(overrides)},
        )
