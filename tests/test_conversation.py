"""The pure parts of issue 12: agents' #commands, customers' confirmations, Outlook's
Thread-Index, subjects that every decoder reads back exactly; and, through the real
ingest path, confirmation closing and negation reopening a resolved ticket."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.header import decode_header, make_header

import mailparser
import pytest

from daemon.config import ConfigError, load_settings
from daemon.wiring import App
from notifier.compose import Draft, Mailbox, compose
from notifier.conversation import (
    child_block,
    conversation_subject,
    filetime,
    parse_root,
    root_time,
    thread_index,
    thread_root,
)
from tests.fixtures.smtp_sink import SmtpSink
from tests.helpers import AGENT, ANA, LUIS, act, body, deliver, ingest, new_ticket, parsed
from tests.mailbuilder import mail, message_id
from tickets import actions
from tickets.agent_commands import CommandError, split
from tickets.confirmation import confirms
from tickets.models import Ticket

# --- #commands ----------------------------------------------------------------------------


def test_commands_in_spanish_and_english_are_read_and_removed_from_the_text() -> None:
    parsed_mail = split(
        "#estado A la espera\n#ASIGNAR ana@x.example porque sabe\n\n#cc+ marta@x.example\n"
        "Hola Ana:\n#esto ya es texto\nSaludos"
    )
    assert [(c.name, c.value) for c in parsed_mail.commands] == [
        ("status", "waiting_on_customer"),
        ("assign", "ana@x.example porque sabe"),
        ("cc_add", "marta@x.example"),
    ]
    assert parsed_mail.text == "Hola Ana:\n#esto ya es texto\nSaludos"
    english = split("#status resolved\n#team Nutrition\n#take\n#note\n#cc- a@b.example\nok")
    assert [c.name for c in english.commands] == ["status", "team", "take", "note", "cc_remove"]
    assert english.commands[0].value == "resolved"


def test_escalate_and_priority_options_run_to_the_next_key() -> None:
    [esc, prio] = split(
        "#escalar equipo=Nutrición tipo=appointment motivo=Quiere cambiar su dieta, hoy\n"
        "#priority impact=high urgency=medium"
    ).commands
    assert esc.options == {
        "team": "Nutrición",
        "type": "appointment",
        "reason": "Quiere cambiar su dieta, hoy",
    }
    assert prio.options == {"impact": "high", "urgency": "medium"}


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("#cerrar\nhola", "unknown command '#cerrar'"),
        ("#estado feliz", "unknown status 'feliz'"),
        ("#asignar", "what?"),
        ("#escalar equipo=PX tipo=billing", "missing reason"),
        ("#prioridad impacto=alto color=rojo urgencia=alta", "unknown option 'color'"),
    ],
)
def test_unreadable_commands_are_refused_with_a_clear_message(text: str, error: str) -> None:
    with pytest.raises(CommandError, match=error):
        split(text)


# --- confirmations ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "sí",
        "Sí, gracias",
        "¡Gracias, ya funciona!",
        "gracias, resuelto",
        "Ya quedó, muchas gracias.\n\nSaludos,\nMaría José",
        "yes, it works",
        "Thanks, all good",
    ],
)
def test_a_short_confirmation_confirms(text: str) -> None:
    assert confirms(text)


@pytest.mark.parametrize(
    "text",
    [
        "no funciona",
        "Sigue igual",
        "Gracias, pero todavía no carga la agenda",
        "¿Ya funciona? No veo el cambio",
        "it still doesn't work",
        "Hola, ahora el problema es otro: la factura sale con el nombre equivocado y la "
        "clínica necesita reenviarla a la aseguradora antes del viernes, gracias",
        "",
    ],
)
def test_anything_else_does_not_confirm(text: str) -> None:
    assert not confirms(text)


def test_an_attachment_is_no_confirmation() -> None:
    assert not confirms("ok", attachments=1)


def _resolved_ticket(app: App) -> tuple[int, bytes]:
    number, raw = new_ticket(app, cc=LUIS)
    act(app, number, lambda s, t: actions.set_status(s, t, "resolved", AGENT))
    return number, raw


def test_confirmation_closes_a_resolved_ticket_and_negation_reopens_it(
    rapp: App, sink: SmtpSink
) -> None:
    number, raw = _resolved_ticket(rapp)
    no = mail(ANA, f"Re: [#{number}] x", "No, sigue igual.", in_reply_to=message_id(raw))
    assert ingest(rapp, no).ticket_id == number
    with rapp.sessions() as s:
        assert s.get(Ticket, number).status == "in_progress"  # type: ignore[union-attr]
    act(rapp, number, lambda s, t: actions.set_status(s, t, "resolved", AGENT))
    yes = mail(ANA, f"Re: [#{number}] x", "Sí, ya funciona. Gracias", in_reply_to=message_id(raw))
    assert ingest(rapp, yes).ticket_id == number
    with rapp.sessions() as s:
        ticket = s.get(Ticket, number)
        assert ticket is not None and ticket.status == "closed"
    deliver(rapp)
    survey = parsed(sink.messages[-1])
    # The survey reaches the customer whose confirmation closed the ticket.
    assert "ana@clinica.example" in sink.messages[-1].rcpt_tos
    assert survey["Subject"] == f"[#{number}] No puedo agendar citas"
    assert "del 1 al 5" in body(survey)


# --- Thread-Index -------------------------------------------------------------------------


def test_thread_index_has_outlooks_layout() -> None:
    created = datetime(2026, 3, 3, 10, 0, tzinfo=UTC)
    root = thread_root(created, b"G" * 16)
    assert len(root) == 22 and root[0] == 1  # FILETIME's top byte is 0x01 nowadays
    assert root[:6] == filetime(created).to_bytes(8, "big")[:6]
    assert abs(root_time(root) - created) < timedelta(seconds=2)
    later = thread_index(root, created, created + timedelta(hours=5))
    raw = base64.b64decode(later)
    assert len(raw) == 27 and raw[:22] == root and parse_root(later) == root
    block = int.from_bytes(raw[22:], "big")
    assert block >> 39 == 0  # delta code: under ~1.8 years
    delta = ((block >> 8) & 0x7FFFFFFF) << 18
    assert abs(delta / 10_000_000 - 5 * 3600) < 1
    assert parse_root("AdmXyz0123456789==") is None  # a made-up header is ignored
    assert child_block(created, created - timedelta(days=1))[:4] == b"\x00\x00\x00\x00"


# --- subjects -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "subject",
    [
        "Facturación del pago de la cita número ñandú para el señor José María Pérez",
        "Cita: Cerrado — ¿cómo te atendimos?",
        "No puedo agendar citas",
        "Re: " + "Clínica " * 30,
    ],
)
def test_subjects_survive_every_decoder_exactly(subject: str) -> None:
    subject = " ".join(subject.split())
    draft = Draft(subject=subject, body="x", sender=Mailbox("s@x.example"),
                  to=[Mailbox("a@x.example")])  # fmt: skip
    raw = compose(draft, "m1@x.example", datetime(2026, 1, 1, tzinfo=UTC)).as_bytes()
    header_block = raw.split(b"\r\n\r\n", 1)[0]
    assert all(len(line) <= 78 for line in header_block.split(b"\r\n"))
    assert str(message_from_bytes(raw, policy=policy.default)["Subject"]) == subject
    legacy = message_from_bytes(raw)["Subject"]
    assert str(make_header(decode_header(legacy))) == subject
    assert mailparser.parse_from_bytes(raw).subject == subject
    assert conversation_subject("[#3]", "  a   b ", answer=True) == "Re: [#3] a b"


# --- configuration ------------------------------------------------------------------------


def test_teams_and_agents_read_in_old_and_new_forms() -> None:
    old = load_settings(None, agents=["lucia@x.example"], tickets={"teams": ["PX", "Salud"]})
    assert old.tickets.team_names == ["PX", "Salud"]
    assert old.agent_names == {"lucia@x.example": "lucia"}
    new = load_settings(
        None,
        agents=["Lucía Romero <Lucia@X.example>", {"address": "p@x.example", "teams": ["PX"]}],
        tickets={
            "teams": [{"name": "PX", "addresses": ["px@x.example"]}],
            "team_addresses": {"PX": ["lead@x.example"]},
        },
    )
    assert new.agent_names == {"lucia@x.example": "Lucía Romero", "p@x.example": "p"}
    assert new.tickets.addresses_by_team() == {"PX": ["px@x.example", "lead@x.example"]}
    with pytest.raises(ConfigError, match="unknown team 'Ventas'"):
        load_settings(None, agents=[{"address": "p@x.example", "teams": ["Ventas"]}],
                      tickets={"teams": ["PX"]})  # fmt: skip
    with pytest.raises(ConfigError, match="require_authentication needs trusted_authserv_ids"):
        load_settings(None, agent_mail={"require_authentication": True})


def test_an_outlook_customers_own_conversation_is_continued(rapp: App, sink: SmtpSink) -> None:
    theirs = thread_root(datetime(2026, 2, 1, 9, 30, tzinfo=UTC), b"\x42" * 16)
    header = base64.b64encode(theirs).decode()
    number, _ = new_ticket(rapp, client="outlook", headers={"Thread-Index": header})
    act(rapp, number, lambda s, t: actions.set_status(s, t, "in_progress", AGENT))
    deliver(rapp)
    for item in sink.messages:
        ours = base64.b64decode(str(parsed(item)["Thread-Index"]))
        assert ours[:22] == theirs and len(ours) == 27
