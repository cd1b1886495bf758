"""Statuses, transitions, escalation, priority and the agents' commands."""

from __future__ import annotations

import json
import mailbox
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from daemon.wiring import App
from tests.helpers import AGENT, act, buzon, make_app, new_ticket
from tests.mailbuilder import mail
from tickets import actions
from tickets.changes import Assigned, StatusChanged
from tickets.errors import InvalidTransition, TicketError
from tickets.lifecycle import TRANSITIONS, Status, event_marks, time_spent
from tickets.models import Article, Event, OutboxMessage, Ticket
from tickets.priority import InvalidPriority, PriorityMatrix

# --- transitions ----------------------------------------------------------------------------


def test_transition_table_is_the_documented_one() -> None:
    assert TRANSITIONS[Status.CLOSED] == frozenset()
    assert TRANSITIONS[Status.RESOLVED] == {Status.IN_PROGRESS, Status.CLOSED}
    for status in (Status.NEW, Status.IN_PROGRESS, Status.WAITING_ON_CUSTOMER, Status.ON_HOLD):
        assert {Status.RESOLVED, Status.CLOSED} <= TRANSITIONS[status]
        assert status not in TRANSITIONS[status]


def test_invalid_transitions_are_refused_with_a_clear_message(app: App) -> None:
    number, _ = new_ticket(app, subject="No puedo agendar", text="Hola, no puedo.")
    act(app, number, lambda s, t: actions.set_status(s, t, "closed", AGENT))
    with pytest.raises(InvalidTransition, match="cannot move from closed to in_progress"):
        act(app, number, lambda s, t: actions.set_status(s, t, "in_progress", AGENT))
    with pytest.raises(InvalidTransition, match="unknown status 'pending'"):
        act(app, number, lambda s, t: actions.set_status(s, t, "pending", AGENT))
    with pytest.raises(TicketError, match="is closed"):
        act(app, number, lambda s, t: actions.reply(s, t, AGENT, "hola"))


def test_resolved_then_reopened_clears_resolved_at(app: App) -> None:
    number, _ = new_ticket(app, subject="No puedo agendar", text="Hola, no puedo.")
    act(app, number, lambda s, t: actions.set_status(s, t, "resolved", AGENT))
    changes = act(app, number, lambda s, t: actions.set_status(s, t, "in_progress", AGENT))
    assert changes == [StatusChanged(number, "resolved", "in_progress", AGENT)]
    with app.sessions() as s:
        ticket = s.get(Ticket, number)
        assert ticket is not None and ticket.resolved_at is None


# --- escalation and time per level / team --------------------------------------------------------


def test_escalation_records_team_reason_type_and_resets_to_new(app: App) -> None:
    number, _ = new_ticket(app, subject="No puedo agendar", text="Hola, no puedo.")
    act(app, number, lambda s, t: actions.assign(s, t, AGENT, agent="maria", team="Salud"))
    outbox_before = _count_outbox(app)
    act(
        app,
        number,
        lambda s, t: actions.escalate(
            s,
            t,
            AGENT,
            team="PX",
            reason="Quiere revisar un pago pendiente",
            escalation_type="Billing",
        ),
    )
    with app.sessions() as s:
        ticket = s.get(Ticket, number)
        assert ticket is not None
        assert (ticket.level, ticket.status, ticket.team, ticket.assignee, ticket.category) == (
            2,
            "new",
            "PX",
            None,
            "billing",
        )
        [escalation] = s.scalars(
            select(Event).where(Event.ticket_id == number, Event.kind == "escalation")
        )
        assert escalation.actor == AGENT
        assert escalation.data == {
            "team": "PX",
            "reason": "Quiere revisar un pago pendiente",
            "type": "billing",
            "from_level": 1,
            "from_team": "Salud",
        }
        [note] = s.scalars(
            select(Article).where(Article.ticket_id == number, Article.kind == "note")
        )
        assert note.author == AGENT and "Quiere revisar un pago pendiente" in note.text
    assert _count_outbox(app) == outbox_before  # level changes are never told to customers
    with pytest.raises(TicketError, match="unknown type 'dolor'"):
        act(
            app,
            number,
            lambda s, t: actions.escalate(
                s, t, AGENT, team="PX", reason="x", escalation_type="dolor"
            ),
        )
    with pytest.raises(TicketError, match="needs a reason"):
        act(
            app,
            number,
            lambda s, t: actions.escalate(
                s, t, AGENT, team="PX", reason="  ", escalation_type="general"
            ),
        )


def test_time_per_level_and_team_is_computed_from_the_events(app: App) -> None:
    number, _ = new_ticket(app, subject="No puedo agendar", text="Hola, no puedo.")
    act(app, number, lambda s, t: actions.assign(s, t, AGENT, team="Salud"))
    act(
        app,
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
    act(app, number, lambda s, t: actions.set_status(s, t, "resolved", AGENT))
    act(app, number, lambda s, t: actions.set_status(s, t, "in_progress", AGENT))
    # Put the history on a known clock: created 09:00, team 09:30, escalated 11:00,
    # resolved 12:00, reopened 15:00; read at 16:00.
    t0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
    moments = {
        "team:Salud": 30,
        "team:Nutrición": 120,
        "level:2": 120,
        "status:resolved": 180,
        "status:in_progress": 360,
    }
    with app.sessions.begin() as s:
        ticket = s.get(Ticket, number)
        assert ticket is not None
        ticket.created_at = t0
        for event in ticket.events:
            key = f"{event.field}:{event.new_value}"
            event.created_at = t0 + timedelta(minutes=moments.get(key, 120 if event.field else 0))
    with app.sessions() as s:
        ticket = s.get(Ticket, number)
        assert ticket is not None
        spent = time_spent(ticket.created_at, event_marks(ticket.events), t0 + timedelta(hours=7))
    hour = 3600.0
    assert spent.by_level == {1: 2 * hour, 2: 2 * hour}
    assert spent.by_team == {"": 0.5 * hour, "Salud": 1.5 * hour, "Nutrición": 2 * hour}


def test_time_spent_is_pure_over_marks() -> None:
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    marks = [
        (t0 + timedelta(hours=1), "level", "2"),
        (t0 + timedelta(hours=1), "team", "PX"),
        (t0 + timedelta(hours=3), "status", "closed"),
        (t0 + timedelta(hours=2), "note", ""),
    ]
    spent = time_spent(t0, marks, t0 + timedelta(days=1))
    assert spent.by_level == {1: 3600.0, 2: 7200.0}
    assert spent.by_team == {"": 3600.0, "PX": 7200.0}


# --- assignment, priority, categories ----------------------------------------------------------


def test_assigning_an_agent_takes_a_new_ticket_in_progress(app: App) -> None:
    number, _ = new_ticket(app, subject="No puedo agendar", text="Hola, no puedo.")
    changes = act(app, number, lambda s, t: actions.assign(s, t, AGENT, agent="luis"))
    assert changes == [
        Assigned(number, "luis", None, AGENT),
        StatusChanged(number, "new", "in_progress", AGENT),
    ]
    with pytest.raises(TicketError, match="already assigned"):
        act(app, number, lambda s, t: actions.assign(s, t, AGENT, agent="luis"))
    changes = act(app, number, lambda s, t: actions.assign(s, t, AGENT, team="PX"))
    # No status change this time.
    assert changes == [Assigned(number, "luis", "PX", AGENT, previous="luis", team_changed=True)]


def test_reassigning_needs_a_note_that_names_the_new_assignee(app: App) -> None:
    number, _ = new_ticket(app, subject="No puedo agendar", text="Hola, no puedo.")
    act(app, number, lambda s, t: actions.assign(s, t, AGENT, agent="luis"))
    with pytest.raises(TicketError, match="reassigning needs a note"):
        act(app, number, lambda s, t: actions.assign(s, t, AGENT, agent="ana"))
    changes = act(
        app, number, lambda s, t: actions.assign(s, t, AGENT, agent="ana", note="Sabe de pagos")
    )
    assert changes == [Assigned(number, "ana", None, AGENT, previous="luis", note="Sabe de pagos")]
    with app.sessions() as s:
        notes = list(s.scalars(select(Article.text).where(Article.kind == "note")))
    assert notes == ["Asignado a ana: Sabe de pagos"]


def test_configured_teams_are_enforced(tmp_path: Path) -> None:
    app = make_app(tmp_path, f"sqlite:///{tmp_path / 'b.db'}", tickets={"teams": ["PX", "Salud"]})
    number, _ = new_ticket(app, subject="No puedo agendar", text="Hola, no puedo.")
    with pytest.raises(TicketError, match="unknown team 'Ventas'; one of: PX, Salud"):
        act(
            app,
            number,
            lambda s, t: actions.assign(s, t, AGENT, team="Ventas", catalogue=app.catalogue),
        )
    act(
        app, number, lambda s, t: actions.assign(s, t, AGENT, team="px", catalogue=app.catalogue)
    )
    with app.sessions() as s:
        assert s.get(Ticket, number).team == "PX"  # type: ignore[union-attr]
    app.engine.dispose()


def test_priority_matrix_default_aliases_and_configuration(tmp_path: Path) -> None:
    matrix = PriorityMatrix()
    assert matrix.priority("high", "high") == ("high", "high", "P1")
    assert matrix.priority("Alta", "baja") == ("high", "low", "P3")
    assert matrix.priority("low", "low")[2] == "P4"
    with pytest.raises(InvalidPriority, match="unknown urgency 'now'"):
        matrix.priority("high", "now")
    custom = {"critical": {"soon": "P1", "later": "P2"}, "minor": {"soon": "P3", "later": "P4"}}
    app = make_app(tmp_path, f"sqlite:///{tmp_path / 'b.db'}", tickets={"priority_matrix": custom})
    number, _ = new_ticket(app, subject="No puedo agendar", text="Hola, no puedo.")
    changes = act(
        app,
        number,
        lambda s, t: actions.set_priority(
            s, t, AGENT, impact="critical", urgency="later", matrix=app.catalogue.matrix
        ),
    )
    assert [(c.old, c.new) for c in changes] == [("P3", "P2")]  # type: ignore[union-attr]
    with app.sessions() as s:
        ticket = s.get(Ticket, number)
        assert ticket is not None
        assert (ticket.impact, ticket.urgency, ticket.priority) == ("critical", "later", "P2")
        # The SLA clocks follow the new priority in the same transaction.
        assert ticket.first_response_due_at is not None
    app.engine.dispose()


def test_priority_matrix_with_a_hole_is_a_config_error(tmp_path: Path) -> None:
    from daemon.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match="tickets.priority_matrix"):
        load_settings(
            None, tickets={"priority_matrix": {"high": {"high": "P1"}, "low": {"soon": "P4"}}}
        )


def _count_outbox(app: App) -> int:
    with app.sessions() as s:
        return len(list(s.scalars(select(OutboxMessage.id))))


# --- the commands, as agents run them -----------------------------------------------------------


def test_agent_commands_end_to_end_with_the_local_maildir(tmp_path: Path) -> None:
    raw = mail(
        "Ana Pérez <ana@clinica.example>",
        "No carga la agenda",
        "Hola, no carga.",
        cc="Luis <luis@clinica.example>",
    )
    assert buzon(["ingest"], tmp_path, raw.decode()).returncode == 0
    steps = [
        (["tickets", "assign", "1", "--agent", "María López"], "assigned mail queued for 2"),
        (["tickets", "note", "1", "Llamar a la clínica antes de las 12"], "note added"),
        (["tickets", "priority", "1", "--impact", "high", "--urgency", "medium"], "priority P2"),
        (
            [
                "tickets",
                "escalate",
                "1",
                "--team",
                "PX",
                "--reason",
                "Pago pendiente",
                "--type",
                "billing",
                "--as",
                "luisa",
            ],
            "escalated to PX",
        ),
    ]
    for args, expected in steps:
        result = buzon(args, tmp_path)
        assert result.returncode == 0, result.stderr
        assert expected in result.stdout
    answer = tmp_path / "respuesta.txt"
    answer.write_text("Hola Ana:\n\nYa quedó. Adjunto el comprobante.\n", encoding="utf-8")
    receipt = tmp_path / "comprobante.pdf"
    receipt.write_bytes(b"%PDF-1.4 comprobante")
    result = buzon(
        [
            "tickets",
            "reply",
            "1",
            "--file",
            str(answer),
            "--attach",
            str(receipt),
            "--status",
            "resolved",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "reply mail queued for 2" in result.stdout

    delivered = buzon(["outbox", "deliver"], tmp_path)
    assert delivered.stdout.strip() == "outbox: 3 sent", delivered.stderr
    box = mailbox.Maildir(tmp_path / "data" / "outbox-maildir", create=False)
    subjects = sorted(str(m["Subject"]) for m in box)
    assert len(subjects) == 3
    # One conversation: every mail carries the ticket's subject ("Re: " where it answers).
    assert {s.removeprefix("Re: ") for s in subjects} == {"[#1] No carga la agenda"}
    # Maildir files have the platform's line endings (LF), as any MDA writes them.
    for path in (tmp_path / "data" / "outbox-maildir" / "new").iterdir():
        assert b"\r\n" not in path.read_bytes() and b"\n" in path.read_bytes()
    assert all(m["X-Buzon-Envelope-To"] == "ana@clinica.example, luis@clinica.example" for m in box)

    listed = json.loads(buzon(["outbox", "list", "--json"], tmp_path).stdout)
    assert [r["kind"] for r in listed] == ["reply", "assigned", "acknowledgement"]
    assert {r["state"] for r in listed} == {"sent"}

    shown = buzon(["tickets", "show", "1", "--json"], tmp_path)
    data = json.loads(shown.stdout)
    assert (data["status"], data["level"], data["team"], data["priority"]) == (
        "resolved",
        2,
        "PX",
        "P2",
    )
    kinds = [(e["kind"], e["actor"]) for e in data["events"]]
    assert ("escalation", "luisa") in kinds and ("assignee", "maria") in kinds
    assert set(data["time_by_level"]) == {"1", "2"}
    assert "PX" in data["time_by_team"]
    human = buzon(["tickets", "show", "1"], tmp_path).stdout
    assert "reason Pago pendiente" in human and "time open (h:mm): level 1" in human
    notes = [a for a in data["articles"] if a["kind"] == "note"]
    assert len(notes) == 2  # the agent's note and the escalation's stamp


def test_invalid_transition_via_the_cli_is_one_line_and_non_zero(tmp_path: Path) -> None:
    raw = mail("Ana <ana@clinica.example>", "Hola", "Hola")
    assert buzon(["ingest"], tmp_path, raw.decode()).returncode == 0
    assert buzon(["tickets", "status", "1", "closed"], tmp_path).returncode == 0
    result = buzon(["tickets", "status", "1", "in_progress"], tmp_path)
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("buzon: cannot move from closed to in_progress")
    missing = buzon(["tickets", "status", "99", "resolved"], tmp_path)
    assert missing.returncode != 0 and missing.stderr.strip() == "buzon: no ticket #99"


def test_outbox_retry_cli_on_unknown_and_sent_rows(tmp_path: Path) -> None:
    raw = mail("Ana <ana@clinica.example>", "Hola", "Hola")
    assert buzon(["ingest"], tmp_path, raw.decode()).returncode == 0
    assert buzon(["outbox", "deliver"], tmp_path).returncode == 0
    sent = buzon(["outbox", "retry", "1"], tmp_path)
    assert sent.returncode != 0 and "already sent" in sent.stderr
    unknown = buzon(["outbox", "retry", "7"], tmp_path)
    assert unknown.returncode != 0 and unknown.stderr.strip() == "buzon: no outbox message 7"
    assert "no mails" in buzon(["outbox", "list", "--failed"], tmp_path).stdout
