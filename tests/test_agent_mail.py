"""The whole conversation by mail (issue 12): customers and agents work a ticket from
their mail clients, through the real SMTP listener and the real outbox (SMTP sink).

Agents answer the notifications they receive; the signed agent reply address in their
Reply-To is what gives their mail agent power (invariant 9). Every mail of a ticket is
checked with Gmail's rule and JWZ threading: one conversation (invariant 8).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import select

from daemon.wiring import App
from tests.fixtures.smtp_listener import SmtpServer, serve_smtp
from tests.fixtures.smtp_sink import SmtpSink
from tests.helpers import body, count, deliver, parsed, relay_app
from tests.mailbuilder import mail, quote
from tests.threads import gmail_conversations, jwz_roots, message_id
from tickets.agent_mail import agent_reply_address, token_ticket
from tickets.models import Article, OutboxMessage, Ticket

CUSTOMER = "mariajose@clinica.example"
COLLEAGUE = "luis@clinica.example"
LUCIA = "lucia@soporte.example"
ANA_RUIZ = "ana.ruiz@soporte.example"
PEDRO = "pedro@soporte.example"
AGENDA = "agenda@soporte.example"  # the front-line team's address, also the triage one
NUTRICION = "nutricion@soporte.example"
SUPPORT = "soporte@soporte.example"
SUBJECT = "No puedo agendar citas"

AGENTS = [
    {"address": LUCIA, "name": "Lucía Romero", "teams": ["Agenda"]},
    {"address": ANA_RUIZ, "name": "Ana Ruiz", "teams": ["Agenda"]},
    {"address": PEDRO, "name": "Pedro Díaz", "teams": ["Nutrición"]},
]
TICKETS = {
    "teams": [
        {"name": "Agenda", "addresses": [AGENDA]},
        {"name": "Nutrición", "addresses": [NUTRICION]},
    ],
    "triage_addresses": [AGENDA],
}


def desk_app(tmp_path: Path, db_url: str, sink: SmtpSink, **agent_mail: object) -> App:
    return relay_app(
        tmp_path,
        db_url,
        sink,
        agents=AGENTS,
        tickets=TICKETS,
        agent_mail={"notify": True, **agent_mail},
    )


@pytest.fixture
def desk(tmp_path: Path, db_url: str, sink: SmtpSink) -> Iterator[App]:
    app = desk_app(tmp_path, db_url, sink)
    yield app
    app.engine.dispose()


@pytest.fixture
def server(desk: App) -> Iterator[SmtpServer]:
    with serve_smtp(desk) as running:
        yield running


class Conversation:
    """One ticket worked by mail: what each side sent and received, in order."""

    def __init__(self, server: SmtpServer, sink: SmtpSink) -> None:
        self.server, self.sink = server, sink
        self.sent: list[EmailMessage] = []  # what customers and agents sent us

    def send(self, raw: bytes, rcpt: str) -> EmailMessage:
        msg = message_from_bytes(raw, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        sender = msg["From"].addresses[0].addr_spec
        wire = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")  # SMTP's line ends
        with self.server.client() as client:
            client.sendmail(sender, [rcpt], wire)
        self.server.wait_processed()
        deliver(self.server.app)
        self.sent.append(msg)
        return msg

    def inbox(self, address: str) -> list[EmailMessage]:
        return [parsed(m) for m in self.sink.messages if address in m.rcpt_tos]

    def last(self, address: str) -> EmailMessage:
        return self.inbox(address)[-1]

    def answer(self, frm: str, to_mail: EmailMessage, text: str, **kwargs: object) -> bytes:
        """A reply as a mail client writes it: Reply-To, Re: subject, the chain, quoted."""
        refs = [*str(to_mail["References"] or "").split(), str(to_mail["Message-ID"])]
        return mail(
            frm,
            f"Re: {str(to_mail['Subject']).removeprefix('Re: ')}",
            text + quote("gmail", "Soporte", SUPPORT, body(to_mail)),
            to=str(to_mail["Reply-To"]),
            in_reply_to=str(to_mail["Message-ID"]),
            references=refs,
            **kwargs,  # type: ignore[arg-type]
        )


def reply_to(msg: EmailMessage) -> str:
    return str(msg["Reply-To"].addresses[0].addr_spec)


def ticket(app: App, number: int = 1) -> Ticket:
    with app.sessions() as s:
        found = s.get(Ticket, number)
        assert found is not None
        s.expunge(found)
        return found


def opened(conv: Conversation) -> EmailMessage:
    """The customer writes with a colleague in copy; the team hears of the ticket."""
    conv.send(
        mail(
            f"María José Pérez <{CUSTOMER}>",
            SUBJECT,
            "Hola, desde ayer el sistema no me deja agendar citas.",
            cc=f"Luis Gómez <{COLLEAGUE}>",
        ),
        SUPPORT,
    )
    [notice] = conv.inbox(AGENDA)
    return notice


def lucia_answers(conv: Conversation, notice: EmailMessage, text: str, **kw: object) -> None:
    raw = conv.answer(f"Lucía Romero <{LUCIA}>", notice, text, **kw)
    conv.send(raw, reply_to(notice))


# --- the whole conversation ----------------------------------------------------------------


def test_a_ticket_worked_from_start_to_close_by_mail(
    server: SmtpServer, sink: SmtpSink, desk: App
) -> None:
    conv = Conversation(server, sink)
    notice = opened(conv)
    [ack] = conv.inbox(CUSTOMER)
    assert [m["Message-ID"] for m in conv.inbox(COLLEAGUE)] == [ack["Message-ID"]]
    assert ack["Subject"] == f"Re: [#1] {SUBJECT}"
    assert body(ack).startswith("Hola María José Pérez:")

    # The team is told, with the customer's words and a reply address of its own.
    assert notice["Subject"] == f"[#1] {SUBJECT}"
    assert notice["Auto-Submitted"] == "auto-generated"
    assert "Nuevo ticket [#1] de María José Pérez" in body(notice)
    assert "desde ayer el sistema no me deja agendar citas" in body(notice)
    assert token_ticket(desk.policy.secret, reply_to(notice), AGENDA) == 1
    assert not conv.inbox(LUCIA)  # the triage address, not every agent

    # Lucía answers from her mail client: a status command, an attachment, a signature.
    lucia_answers(
        conv,
        notice,
        "#estado a la espera\n\nHola María José:\n\n¿Nos envías una captura del error?\n\n"
        "Gracias,\n-- \nLucía Romero\nSoporte Clínica Central\nTel. 555 1234",
        attachments=[("guia.pdf", "application/pdf", b"%PDF-1.4 guia")],
    )
    answer = conv.last(CUSTOMER)
    assert conv.last(COLLEAGUE)["Message-ID"] == answer["Message-ID"]  # one mail, in CC
    assert not conv.inbox(LUCIA)  # the agent is not echoed
    sender = answer["From"].addresses[0]
    assert (sender.display_name, sender.addr_spec) == ("Lucía Romero (Soporte)", SUPPORT)
    assert answer["Subject"] == f"Re: [#1] {SUBJECT}"
    assert answer["Auto-Submitted"] is None
    text = body(answer)
    assert text.startswith("Hola María José:\n\n¿Nos envías una captura del error?")
    assert "#estado" not in text and "Tel. 555 1234" not in text and "Nuevo ticket" not in text
    assert "Estado del ticket: «A la espera de tu respuesta»" in text
    [pdf] = list(answer.iter_attachments())
    assert (pdf.get_filename(), pdf.get_content()) == ("guia.pdf", b"%PDF-1.4 guia")
    chain = str(answer["References"]).split()
    assert chain[:2] == [message_id(conv.sent[0]).join("<>"), str(ack["Message-ID"])]
    state = ticket(desk)
    assert (state.status, state.assignee) == ("waiting_on_customer", LUCIA)
    assert state.first_response_at is not None  # the first-response clock stopped

    # The customer answers; the assignee is told, the colleague too, the customer is not.
    conv.send(
        conv.answer(
            f"María José Pérez <{CUSTOMER}>",
            answer,
            "Adjunto la captura.",
            attachments=[("captura.png", "image/png", b"\x89PNG fake")],
        ),
        reply_to(answer),
    )
    assert ticket(desk).status == "in_progress"
    told = conv.last(LUCIA)
    assert token_ticket(desk.policy.secret, reply_to(told), LUCIA) == 1
    assert "María José Pérez <mariajose@clinica.example> respondió" in body(told)
    assert "Adjunto la captura." in body(told) and "captura.png" in body(told)
    assert told["Subject"] == f"Re: [#1] {SUBJECT}"
    colleague = body(conv.last(COLLEAGUE))
    assert colleague.startswith("Hola Luis Gómez:")
    assert "Recibimos la respuesta de María José Pérez" in colleague
    assert "tu solicitud" not in colleague and "Un agente ha tomado" not in colleague
    assert conv.last(CUSTOMER)["Message-ID"] == answer["Message-ID"]  # no echo

    # Lucía resolves it; the customer is asked to confirm.
    lucia_answers(conv, told, "#status resolved\nListo, ya quedó corregido.\n\nSaludos\nLucía")
    resolved = conv.last(CUSTOMER)
    assert body(resolved).startswith("Listo, ya quedó corregido.")
    assert "Estado del ticket: «Resuelto»" in body(resolved)
    assert "responde «sí» o «ya funciona»" in body(resolved)
    assert ticket(desk).status == "resolved"

    # "¡Gracias, ya funciona!" closes it and brings the survey.
    conv.send(conv.answer(f"María José Pérez <{CUSTOMER}>", resolved, "¡Gracias, ya funciona!"),
              reply_to(resolved))  # fmt: skip
    assert ticket(desk).status == "closed"
    survey = conv.last(CUSTOMER)
    assert survey["Subject"] == f"[#1] {SUBJECT}"
    assert "pasó a «Cerrado»" in body(survey) and "del 1 al 5" in body(survey)
    assert "respondió" in body(conv.last(LUCIA)) and "Cerrado" in body(conv.last(LUCIA))
    with desk.sessions() as s:
        kinds = list(s.scalars(select(OutboxMessage.kind).order_by(OutboxMessage.id)))
    assert kinds == [
        "acknowledgement", "staff_new", "reply", "status", "staff_customer_reply", "reply",
        "survey", "staff_customer_reply",
    ]  # fmt: skip

    assert_one_conversation(conv)


def assert_one_conversation(conv: Conversation) -> None:
    """Gmail's rule and JWZ threading, for the customer's side, the agents' side and
    both: every mail of the ticket is one conversation."""
    received = [parsed(m) for m in conv.sink.messages]
    customer_side = [*conv.inbox(CUSTOMER), *conv.inbox(COLLEAGUE)]
    customer_side += [m for m in conv.sent[1:] if CUSTOMER in str(m["From"])]
    agent_side = [*conv.inbox(AGENDA), *conv.inbox(LUCIA)]
    agent_side += [m for m in conv.sent if LUCIA in str(m["From"])]
    everything = [*received, *conv.sent]
    for side in (customer_side, agent_side, everything):
        unique = list({message_id(m): m for m in side}.values())
        # Gmail: the customer's very first mail has no tag in its subject; every other
        # mail, sent or received, on either side, is one conversation.
        tagged = [m for m in unique if m is not conv.sent[0]]
        assert len(gmail_conversations(tagged)) == 1, [str(m["Subject"]) for m in tagged]
        assert len(jwz_roots(unique)) == 1
    # Outlook: one Thread-Topic, one conversation root in every Thread-Index.
    assert {str(m["Thread-Topic"]) for m in received} == {f"[#1] {SUBJECT}"}
    roots = set()
    for m in received:
        index = base64.b64decode(str(m["Thread-Index"]))
        assert index[0] == 1 and len(index) == 27
        roots.add(index[:22])
    assert len(roots) == 1


# --- security ------------------------------------------------------------------------------


def test_a_forged_agent_from_on_the_customer_address_gets_no_agent_power(
    server: SmtpServer, sink: SmtpSink, desk: App
) -> None:
    conv = Conversation(server, sink)
    notice = opened(conv)
    lucia_answers(conv, notice, "Hola, ¿nos mandas una captura?")
    answer = conv.last(CUSTOMER)
    before = len(sink.messages)
    # The customer knows their own reply address and writes as Lucía.
    forged = conv.answer(
        f"Lucía Romero <{LUCIA}>", answer, "#estado resuelto\n\nTodo resuelto, cerramos."
    )
    conv.send(forged, reply_to(answer))
    assert ticket(desk).status == "in_progress"  # neither resolved nor anything else
    new = [parsed(m) for m in sink.messages[before:]]
    assert all(CUSTOMER not in str(m["To"]) and COLLEAGUE not in str(m["Cc"]) for m in new)
    assert [m["To"].addresses[0].addr_spec for m in new] == [LUCIA]
    assert "NO se envió al cliente" in body(new[0])  # Lucía learns of it
    with desk.sessions() as s:
        last = s.scalars(select(Article).order_by(Article.id.desc())).first()
        assert last is not None and last.kind == "inbound"  # kept as the customer's mail

    # Another agent on Lucía's personal reply address: not bound to them either.
    before = len(sink.messages)
    conv.send(conv.answer(f"Ana Ruiz <{ANA_RUIZ}>", conv.last(LUCIA), "#estado resuelto\nok"),
              reply_to(conv.last(LUCIA)))  # fmt: skip
    assert ticket(desk).status == "in_progress"
    assert all(CUSTOMER not in m.rcpt_tos for m in sink.messages[before:])


def test_an_unknown_or_refused_command_tells_the_agent_and_nobody_else(
    server: SmtpServer, sink: SmtpSink, desk: App
) -> None:
    conv = Conversation(server, sink)
    notice = opened(conv)
    before = len(sink.messages)
    lucia_answers(conv, notice, "#cerrar ya\n\nHola María José, ya está.")
    new = [parsed(m) for m in sink.messages[before:]]
    assert [m["To"].addresses[0].addr_spec for m in new] == [LUCIA]  # the writer, only
    error = body(new[0])
    assert "no se aplicó" in error and "unknown command '#cerrar ya'" in error
    assert token_ticket(desk.policy.secret, reply_to(new[0]), LUCIA) == 1  # answer to retry
    assert ticket(desk).status == "new" and ticket(desk).assignee is None

    # A known command the desk refuses (an agent who is not configured): same, and the
    # text that came with it is not sent either.
    before = len(sink.messages)
    lucia_answers(conv, notice, "#asignar nadie@otro.example\n\nHola, ya está.")
    new = [parsed(m) for m in sink.messages[before:]]
    assert [m["To"].addresses[0].addr_spec for m in new] == [LUCIA]
    assert "unknown agent 'nadie@otro.example'" in body(new[0])
    assert count(desk, OutboxMessage, OutboxMessage.kind == "reply") == 0
    with desk.sessions() as s:
        notes = list(s.scalars(select(Article.text).where(Article.kind == "note")))
    assert len(notes) == 2 and all(n.startswith("Correo del agente no aplicado") for n in notes)


def test_required_dkim_or_dmarc_pass_from_a_trusted_server(
    tmp_path: Path, db_url: str, sink: SmtpSink
) -> None:
    app = desk_app(
        tmp_path, db_url, sink, require_authentication=True,
        trusted_authserv_ids=["mx.soporte.example"],
    )  # fmt: skip
    with serve_smtp(app) as running:
        conv = Conversation(running, sink)
        notice = opened(conv)
        for header in (
            None,
            "mx.otro.example; dkim=pass header.d=soporte.example",  # untrusted server
            "mx.soporte.example; dkim=fail header.d=soporte.example",
        ):
            extra = {"headers": {"Authentication-Results": header}} if header else {}
            lucia_answers(conv, notice, "#estado resuelto\nListo.", **extra)
            assert ticket(app).status == "new"
        lucia_answers(
            conv, notice, "#estado resuelto\nListo.",
            headers={"Authentication-Results": "mx.soporte.example; spf=pass "
                     "smtp.mailfrom=soporte.example; dkim=pass header.d=soporte.example"},
        )  # fmt: skip
        assert ticket(app).status == "resolved"
    app.engine.dispose()


# --- the other commands --------------------------------------------------------------------


def test_commands_assign_escalate_note_priority_and_cc(
    server: SmtpServer, sink: SmtpSink, desk: App
) -> None:
    conv = Conversation(server, sink)
    notice = opened(conv)
    lucia_answers(conv, notice, "#tomar\n#prioridad impacto=alto urgencia=alta")
    state = ticket(desk)
    assert (state.assignee, state.priority, state.status) == (LUCIA, "P1", "in_progress")
    # The customer hears who handles it, by name.
    assert "está a cargo de Lucía Romero." in body(conv.last(CUSTOMER))

    # Reassigning needs a note (seed 001); with it, Ana is told who and why.
    lucia_answers(conv, notice, f"#asignar {ANA_RUIZ}")
    assert "reassigning needs a note" in body(conv.last(LUCIA))
    lucia_answers(conv, notice, "#asignar Ana Ruiz porque lleva la facturación")
    assert ticket(desk).assignee == ANA_RUIZ
    assigned = conv.last(ANA_RUIZ)
    assert "te ha sido asignado por Lucía Romero" in body(assigned)
    assert "Nota: porque lleva la facturación" in body(assigned)
    assert token_ticket(desk.policy.secret, reply_to(assigned), ANA_RUIZ) == 1

    # Ana: an internal note, then a watcher added and an answer that reaches them.
    before = len(sink.messages)
    conv.send(conv.answer(f"Ana Ruiz <{ANA_RUIZ}>", assigned,
                          "#nota\nLa clínica tiene un pago pendiente."), reply_to(assigned))
    assert all(CUSTOMER not in m.rcpt_tos for m in sink.messages[before:])
    conv.send(
        conv.answer(f"Ana Ruiz <{ANA_RUIZ}>", assigned,
                    "#cc+ marta@clinica.example\nHola, revisamos el pago."),
        reply_to(assigned),
    )  # fmt: skip
    to_marta = conv.last("marta@clinica.example")
    assert body(to_marta).startswith("Hola, revisamos el pago.")
    assert to_marta["From"].addresses[0].display_name == "Ana Ruiz (Soporte)"

    # Escalation: the Nutrición team and its agent are told, with the reason; not the
    # customer (seed 000).
    before = len(sink.messages)
    conv.send(
        conv.answer(f"Ana Ruiz <{ANA_RUIZ}>", assigned,
                    "#escalar equipo=Nutrición tipo=appointment motivo=Quiere cambiar su dieta"),
        reply_to(assigned),
    )  # fmt: skip
    new = sink.messages[before:]
    assert sorted(a for m in new for a in m.rcpt_tos) == [NUTRICION, PEDRO]
    text = body(parsed(new[0]))
    assert "escalado al equipo Nutrición" in text and "Nota: Quiere cambiar su dieta" in text
    state = ticket(desk)
    assert (state.level, state.team, state.assignee, state.status) == (2, "Nutrición", None, "new")
    with desk.sessions() as s:
        notes = list(s.scalars(select(Article.text).where(Article.kind == "note")))
    assert "La clínica tiene un pago pendiente." in notes
    # Seed 001: the reassignment's note names the new assignee.
    assert "Asignado a Ana Ruiz: porque lleva la facturación" in notes


def test_only_configured_agents_can_be_assigned(desk: App) -> None:
    from tests.helpers import act, new_ticket
    from tickets import actions
    from tickets.errors import TicketError

    number, _ = new_ticket(desk)
    with pytest.raises(TicketError, match="unknown agent 'maria'"):
        act(desk, number, lambda s, t: actions.assign(s, t, "x", agent="maria",
                                                       catalogue=desk.catalogue))  # fmt: skip
    act(desk, number, lambda s, t: actions.assign(s, t, "x", agent="lucía romero",
                                                   catalogue=desk.catalogue))  # fmt: skip
    assert ticket(desk, number).assignee == LUCIA


def test_agent_reply_address_is_bound_to_ticket_and_agent() -> None:
    secret = b"s3cret"
    address = agent_reply_address(SUPPORT, secret, 7, LUCIA)
    assert address.startswith("soporte+a7.") and address.endswith("@soporte.example")
    assert token_ticket(secret, address, LUCIA) == 7
    assert token_ticket(secret, address, ANA_RUIZ) is None
    assert token_ticket(b"other", address, LUCIA) is None
    forged = address.replace("+a7.", "+a8.")
    assert token_ticket(secret, forged, LUCIA) is None
