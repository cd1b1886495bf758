"""The whole loop: our notification reaches a customer, whose answer (or whose
out-of-office) comes back to soporte@ and must land on the same ticket (or nowhere).

The answer is fed through tickets.ingest.accept/process with the envelope an MTA
would give (the SMTP listener is wired to the same two calls).
"""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import make_msgid

from sqlalchemy import select

from daemon.wiring import App
from tests.fixtures.smtp_sink import SmtpSink
from tests.helpers import AGENT, LUIS, act, count, deliver, new_ticket, parsed
from tickets import actions
from tickets.inbox import accept
from tickets.models import OutboxMessage, RawMessage, Ticket


def answer_to(notification: EmailMessage, frm: str, text: str, **headers: str) -> bytes:
    """What a mail client sends when the customer hits Reply on our notification."""
    msg = EmailMessage()
    msg["From"] = frm
    msg["To"] = notification["Reply-To"]
    msg["Subject"] = headers.pop("Subject", f"RE: {notification['Subject']}")
    msg["Message-ID"] = make_msgid(domain="clinica.example")
    msg["In-Reply-To"] = notification["Message-ID"]
    msg["References"] = f"{notification['References']} {notification['Message-ID']}"
    for name, value in headers.items():
        msg[name] = value
    msg.set_content(f"{text}\n\n> {notification['Subject']}\n")
    return msg.as_bytes()


def through_mta(app: App, raw: bytes, rcpt: str) -> tuple[str, int | None]:
    raw_id = accept(
        app.sessions, raw, "smtp", {"mail_from": "x@clinica.example", "rcpt_tos": [rcpt]}
    )
    outcome = app.desk.ingest(raw_id)
    return outcome.state, outcome.ticket_id


def test_customer_reply_to_a_notification_threads_into_the_same_ticket(
    rapp: App,
    sink: SmtpSink,
) -> None:
    number, _ = new_ticket(rapp, cc=LUIS)
    act(rapp, number, lambda s, t: actions.set_status(s, t, "waiting_on_customer", AGENT))
    deliver(rapp)
    status_mail = parsed(sink.messages[-1])
    reply_to = status_mail["Reply-To"].addresses[0].addr_spec

    raw = answer_to(
        status_mail,
        "Ana Pérez <ana@clinica.example>",
        "Aquí va la captura.",
        Subject="RE: la captura",
    )  # the tag got lost: the ids still thread it
    assert through_mta(rapp, raw, reply_to) == ("processed", number)
    assert count(rapp, Ticket) == 1
    with rapp.sessions() as s:
        ticket = s.get(Ticket, number)
        assert ticket is not None and ticket.status == "in_progress"
    # Luis (CC'd) hears the ticket moved on; Ana is not told of her own reply.
    deliver(rapp)
    assert sink.messages[-1].rcpt_tos == ("luis@clinica.example",)


def test_out_of_office_answer_to_a_notification_makes_no_ticket_and_no_mail(
    rapp: App,
    sink: SmtpSink,
) -> None:
    number, _ = new_ticket(rapp, cc=LUIS)
    act(rapp, number, lambda s, t: actions.set_status(s, t, "in_progress", AGENT))
    deliver(rapp)
    notification = parsed(sink.messages[-1])
    reply_to = notification["Reply-To"].addresses[0].addr_spec
    outbox_before = count(rapp, OutboxMessage)

    rfc3834 = answer_to(
        notification,
        "Luis <luis@clinica.example>",
        "Estoy fuera hasta el lunes.",
        **{
            "Auto-Submitted": "auto-replied",
            "Subject": f"Fuera de la oficina: {notification['Subject']}",
        },
    )
    exchange = answer_to(
        notification,
        "Luis <luis@clinica.example>",
        "Estaré de vacaciones.",
        **{
            "Subject": f"Respuesta automática: {notification['Subject']}",
            "X-Auto-Response-Suppress": "All",
        },
    )
    for raw in (rfc3834, exchange):
        state, ticket_id = through_mta(rapp, raw, reply_to)
        assert state == "ignored" and ticket_id == number
    assert count(rapp, Ticket) == 1
    assert count(rapp, OutboxMessage) == outbox_before
    with rapp.sessions() as s:
        reasons = list(s.scalars(select(RawMessage.reason).where(RawMessage.state == "ignored")))
    assert all(r and r.startswith("auto_reply") for r in reasons)
    assert deliver(rapp).total() == 0
