"""The path from raw bytes to tickets, on SQLite and PostgreSQL, with real mails."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from daemon.wiring import App
from parsers.thread_keys import make_message_id, plus_address, subject_tag
from tests.helpers import block_attachment_store, count, make_app
from tests.mailbuilder import mail, message_id, quote
from tickets.inbox import accept, claim_pending, reset_for_reprocess
from tickets.ingest import Outcome, process
from tickets.lifecycle import change_status
from tickets.models import (
    Article,
    AttachmentFile,
    Event,
    MailAddress,
    Participant,
    RawMessage,
    Ticket,
)

ANA = "Ana Pérez <ana@clinica.example>"
LUIS = "Luis Gómez <luis@clinica.example>"
MARTA = "Marta Ruiz <marta@clinica.example>"


def ingest(
    app: App, raw: bytes, source: str = "pipe", envelope: dict[str, Any] | None = None
) -> Outcome:
    raw_id = accept(app.sessions, raw, source, envelope)
    return process(app.sessions, app.policy, raw_id)


def ticket(app: App, number: int) -> Ticket:
    with app.sessions() as s:
        t = s.get(Ticket, number)
        assert t is not None
        return t


def watchers(app: App, number: int) -> set[str]:
    with app.sessions() as s:
        return set(
            s.scalars(
                select(Participant.email).where(
                    Participant.ticket_id == number, Participant.role == "watcher"
                )
            )
        )


def set_status(app: App, number: int, *path: str) -> None:
    with app.sessions.begin() as s:
        t = s.get(Ticket, number)
        for status in path:
            change_status(s, t, status, "agente@soporte.example")


def test_five_mail_chain_with_two_ccd_colleagues_is_one_ticket(app: App) -> None:
    first = mail(
        ANA,
        "No puedo agendar citas",
        "Hola, el sistema no me deja agendar.\nAna",
        cc=f"{LUIS}, {MARTA}",
    )
    m1 = message_id(first)
    created = ingest(app, first)
    assert created.state == "processed" and created.ticket_id is not None
    number = created.ticket_id
    tag = subject_tag("[#{number}]", number)

    r2 = mail(
        LUIS,
        f"RE: {tag} No puedo agendar citas",
        "A mí tampoco me funciona desde ayer."
        + quote("outlook", "Ana Pérez", "ana@clinica.example", "Hola"),
        cc=f"{ANA}, {MARTA}",
        in_reply_to=m1,
        references=[m1],
        client="outlook",
    )
    r3 = mail(
        ANA,
        f"Re: {tag} No puedo agendar citas",
        "Adjunto captura." + quote("gmail", "Luis Gómez", "luis@clinica.example", "A mí"),
        cc=f"{LUIS}, {MARTA}",
        in_reply_to=message_id(r2),
        references=[m1, message_id(r2)],
        attachments=[("captura.png", "image/png", b"\x89PNG fake")],
    )
    r4 = mail(
        MARTA,
        f"Re: {tag} No puedo agendar citas",
        "Confirmo el error en recepción." + quote("apple", "Ana", "ana@clinica.example", "x"),
        cc=f"{ANA}, {LUIS}",
        in_reply_to=message_id(r3),
        references=[m1, message_id(r2), message_id(r3)],
        client="apple",
    )
    r5 = mail(
        ANA,
        "Re: No puedo agendar citas",
        "¿Alguna novedad?",  # the tag got lost
        cc=f"{LUIS}, {MARTA}",
        in_reply_to=message_id(r4),
        references=[m1, message_id(r4)],
    )
    for raw in (r2, r3, r4, r5):
        outcome = ingest(app, raw)
        assert (outcome.state, outcome.ticket_id) == ("processed", number)

    assert count(app, Ticket) == 1
    assert count(app, Article, Article.ticket_id == number) == 5
    assert watchers(app, number) == {"luis@clinica.example", "marta@clinica.example"}
    with app.sessions() as s:
        texts = [a.new_text for a in s.scalars(select(Article).order_by(Article.id))]
        attachment = s.scalar(select(AttachmentFile))
    assert texts[1].strip() == "A mí tampoco me funciona desde ayer."
    assert "escribió" not in texts[2] and texts[2].strip() == "Adjunto captura."
    assert attachment is not None and attachment.filename == "captura.png"
    blob = app.settings.attachments_dir / attachment.sha256[:2] / attachment.sha256[2:4]
    assert (blob / attachment.sha256).read_bytes() == b"\x89PNG fake"


def test_reply_from_ccd_colleague_joins_and_adds_new_cc_as_watcher(app: App) -> None:
    first = mail(ANA, "Factura duplicada", "Me cobraron dos veces.", cc=LUIS)
    number = ingest(app, first).ticket_id
    reply = mail(
        LUIS,
        "Re: Factura duplicada",
        "Adjunto el número de factura 123.",
        cc=f"{ANA}, Jefa <jefa@clinica.example>",
        in_reply_to=message_id(first),
    )
    assert ingest(app, reply).ticket_id == number
    assert watchers(app, number) == {"luis@clinica.example", "jefa@clinica.example"}


def test_tag_alone_from_an_outsider_does_not_join(app: App) -> None:
    number = ingest(app, mail(ANA, "Cita cancelada", "Hola")).ticket_id
    tag = subject_tag("[#{number}]", number)
    intruder = ingest(app, mail("Eve <eve@evil.example>", f"Re: {tag} Cita cancelada", "hola"))
    assert intruder.state == "processed" and intruder.ticket_id != number
    participant = ingest(app, mail(ANA, f"RV: {tag} Cita", "Sigo esperando"))
    assert participant.ticket_id == number
    agent = ingest(app, mail("Agente <agente@soporte.example>", f"AW: {tag}", "Revisando"))
    assert agent.ticket_id == number


def test_tag_alone_from_outsider_joins_when_configured(tmp_path: Path, db_url: str) -> None:
    loose = make_app(tmp_path, db_url, tag_requires_participant=False)
    number = ingest(loose, mail(ANA, "Hola", "x")).ticket_id
    other = ingest(loose, mail("Eve <eve@evil.example>", f"RE[2]: [#{number}] Hola", "y"))
    assert other.ticket_id == number
    loose.engine.dispose()


def test_forward_into_a_ticket_and_a_fresh_forward(app: App) -> None:
    number = ingest(app, mail(ANA, "Pago pendiente", "Hola", cc=LUIS)).ticket_id
    fwd = mail(
        LUIS,
        f"Fwd: [#{number}] Pago pendiente",
        "---------- Forwarded message ---------\nDe: Banco\nComprobante adjunto.",
    )
    assert ingest(app, fwd).ticket_id == number
    fresh = ingest(app, mail(LUIS, "Fwd: Consulta de un paciente", "Reenvío la consulta."))
    assert fresh.ticket_id != number
    assert ticket(app, fresh.ticket_id).subject == "Consulta de un paciente"


def test_same_mail_twice_and_over_two_intakes_is_one_article(app: App) -> None:
    raw = mail(ANA, "Duplicado", "Una sola vez, por favor.")
    first = ingest(app, raw, "imap")
    again = ingest(app, raw, "pipe")
    via_smtp = ingest(
        app,
        b"Received: from mx.example by soporte.example; Mon, 3 Mar 2025\r\n"
        + b"Return-Path: <ana@clinica.example>\r\n"
        + raw,
        "smtp",
    )
    assert first.state == "processed"
    assert again.state == "ignored" and again.article_id == first.article_id
    assert via_smtp.state == "ignored" and "duplicate" in (via_smtp.reason or "")
    assert count(app, Article) == 1 and count(app, RawMessage) == 3


def test_reused_message_id_with_other_content_is_not_dropped(app: App) -> None:
    a = mail(ANA, "Primera consulta", "Uno", msgid="<fixed@broken.example>")
    b = mail(LUIS, "Otra consulta", "Dos", msgid="<fixed@broken.example>")
    assert ingest(app, a).state == "processed"
    assert ingest(app, b).state == "processed"
    assert count(app, Article) == 2


def test_mail_without_message_id_dedupes_on_content(app: App) -> None:
    raw = (
        b"From: ana@clinica.example\r\nTo: soporte@soporte.example\r\n"
        b"Subject: sin id\r\n\r\nhola\r\n"
    )
    assert ingest(app, raw).state == "processed"
    assert ingest(app, raw).state == "ignored"
    assert count(app, Article) == 1


def test_customer_reply_moves_waiting_and_reopens_resolved(app: App) -> None:
    first = mail(ANA, "Resultados", "¿Dónde veo mis resultados?")
    number = ingest(app, first).ticket_id
    set_status(app, number, "in_progress", "waiting_on_customer")
    ingest(app, mail(ANA, f"Re: [#{number}] Resultados", "Aquí está el dato"))
    assert ticket(app, number).status == "in_progress"
    set_status(app, number, "resolved")
    ingest(app, mail(ANA, f"Re: [#{number}] Resultados", "Sigue sin funcionar"))
    reopened = ticket(app, number)
    assert reopened.status == "in_progress" and reopened.resolved_at is None
    assert count(app, Event, Event.ticket_id == number, Event.kind == "status") == 5


def test_reply_to_closed_ticket_opens_a_linked_ticket(app: App) -> None:
    first = mail(ANA, "Reembolso", "Quiero un reembolso")
    number = ingest(app, first).ticket_id
    set_status(app, number, "resolved", "closed")
    follow = ingest(
        app, mail(ANA, f"Re: [#{number}] Reembolso", "Otra pregunta", in_reply_to=message_id(first))
    )
    assert follow.ticket_id != number
    new = ticket(app, follow.ticket_id)
    assert new.parent_id == number and new.status == "new" and new.subject == "Reembolso"
    assert ticket(app, number).status == "closed"
    assert count(app, Event, Event.ticket_id == number, Event.kind == "linked") == 1


def test_auto_reply_never_opens_or_reopens(app: App) -> None:
    number = ingest(app, mail(ANA, "Consulta", "Hola")).ticket_id
    set_status(app, number, "resolved")
    ooo = mail(
        ANA,
        f"Respuesta automática: [#{number}] Consulta",
        "Estoy fuera de la oficina.",
        headers={"Auto-Submitted": "auto-replied"},
    )
    outcome = ingest(app, ooo)
    assert outcome.state == "ignored" and "auto" in (outcome.reason or "")
    assert ticket(app, number).status == "resolved"
    fresh_ooo = ingest(
        app, mail(LUIS, "Out of Office", "Back Monday", headers={"X-Autoreply": "yes"})
    )
    assert fresh_ooo.state == "ignored" and fresh_ooo.ticket_id is None
    human = ingest(app, mail(LUIS, "Pregunta", "hola", headers={"Auto-Submitted": "no"}))
    assert human.state == "processed"
    assert count(app, Ticket) == 2


def test_permanent_bounce_marks_the_address_bouncing(app: App) -> None:
    number = ingest(app, mail(ANA, "Consulta", "Hola", cc="nadie@clinica.example")).ticket_id
    ours = make_message_id(app.policy.secret, number, "soporte.example")
    dsn = (
        "From: MAILER-DAEMON@mx.clinica.example\r\nTo: soporte@soporte.example\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <dsn1@mx.clinica.example>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nThe mail could not be delivered.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n"
        "Final-Recipient: rfc822; nadie@clinica.example\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 no such user\r\n"
        "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"Message-ID: <{ours}>\r\nSubject: [#{number}] Consulta\r\n--B--\r\n"
    ).encode()
    outcome = ingest(app, dsn)
    assert outcome.state == "ignored" and outcome.ticket_id == number
    with app.sessions() as s:
        address = s.get(MailAddress, "nadie@clinica.example")
    assert address is not None and address.bouncing
    assert count(app, Event, Event.ticket_id == number, Event.kind == "bounce") == 1
    assert count(app, Ticket) == 1


def test_signed_plus_address_threads_and_a_forged_one_does_not(app: App) -> None:
    number = ingest(app, mail(ANA, "Consulta", "Hola")).ticket_id
    token_to = plus_address("soporte@soporte.example", app.policy.secret, number)
    good = ingest(app, mail(ANA, "Otro asunto", "respuesta", to=token_to))
    assert good.ticket_id == number
    forged = ingest(
        app, mail(ANA, "Otro asunto 2", "x", to=f"soporte+{number}.000000000000@soporte.example")
    )
    assert forged.ticket_id != number


def test_our_message_id_threads_only_when_signed(app: App) -> None:
    number = ingest(app, mail(ANA, "Consulta", "Hola")).ticket_id
    ours = make_message_id(app.policy.secret, number, "soporte.example")
    assert (
        ingest(app, mail(LUIS, "Re: Consulta", "hola", in_reply_to=f"<{ours}>")).ticket_id == number
    )
    forged = ours.replace(ours.split(".")[3][:4], "0000")
    other = ingest(app, mail(LUIS, "Re: Consulta", "hola 2", in_reply_to=f"<{forged}>"))
    assert other.ticket_id != number


def test_mail_from_our_own_address_is_ignored(app: App) -> None:
    outcome = ingest(app, mail("soporte@soporte.example", "Loop", "x"))
    assert outcome.state == "ignored" and count(app, Ticket) == 0


def test_failure_keeps_the_raw_message_and_reprocess_recovers(app: App) -> None:
    blocker = block_attachment_store(app)  # storing the attachment will fail
    raw = mail(ANA, "Con adjunto", "ver", attachments=[("a.pdf", "application/pdf", b"%PDF")])
    outcome = ingest(app, raw)
    assert outcome.state == "failed" and "Error" in (outcome.reason or "")
    with app.sessions() as s:
        row = s.get(RawMessage, outcome.raw_id)
        assert row is not None and row.raw == raw and row.attempts == 1
    blocker.unlink()
    reset_for_reprocess(app.sessions, [outcome.raw_id])
    again = process(app.sessions, app.policy, outcome.raw_id)
    assert again.state == "processed" and count(app, Ticket) == 1


def test_repeated_failure_quarantines(app: App) -> None:
    block_attachment_store(app)
    raw_id = accept(
        app.sessions, mail(ANA, "a", "b", attachments=[("a", "text/plain", b"1")]), "pipe"
    )
    states = [process(app.sessions, app.policy, raw_id).state for _ in range(3)]
    assert states == ["failed", "failed", "quarantined"]


def test_claims_of_a_dead_local_worker_are_released_at_start(app: App) -> None:
    import socket

    for n in range(3):
        accept(app.sessions, mail(ANA, f"Consulta {n}", "hola"), "smtp")
    dead = f"{socket.gethostname()}:999999999"  # no such process
    assert len(claim_pending(app.sessions, dead, 2, 300)) == 2
    assert len(claim_pending(app.sessions, "other-host:1", 1, 300)) == 1  # alive elsewhere
    worker = app.ingest_worker()
    assert worker.recover_dead_claims() == 2
    assert worker.drain() == 2  # the other host's claim waits for its age-out
    assert count(app, RawMessage, RawMessage.state == "processing") == 1
