"""Full-text search on both databases: inflections, accents, similar tickets."""

from __future__ import annotations

from pathlib import Path

from daemon.wiring import App
from tests.helpers import ANA, buzon, ingest
from tests.mailbuilder import mail
from tickets import search
from tickets.models import Ticket
from tickets.queries import ticket_detail


def open_ticket(app: App, sender: str, subject: str, body: str) -> int:
    outcome = ingest(app, mail(sender, subject, body))
    assert outcome.state == "processed" and outcome.ticket_id is not None
    return outcome.ticket_id


def test_a_word_finds_its_inflections_and_ignores_accents(app: App) -> None:
    billing = open_ticket(app, ANA, "Cobro duplicado", "Me llegó la factura dos veces.")
    other = open_ticket(app, "luis@correo.example", "Cita", "No puedo agendar una cita.")
    with app.sessions() as session:
        assert search.search(session, "facturas") == [billing]
        assert search.search(session, "FACTURACIÓN") == [billing]
        assert search.search(session, "citas agendar") == [other]
        assert search.search(session, "factura cita") == []  # every word must be there
        assert set(search.search(session, "factura cita", any_word=True)) == {billing, other}
        assert search.search(session, "!!! ''") == []


def test_show_lists_possible_duplicates_and_related_tickets(app: App) -> None:
    first = open_ticket(app, ANA, "No puedo entrar al portal", "Me dice contraseña inválida.")
    related = open_ticket(app, "luis@correo.example", "Portal caído", "El portal no carga.")
    again = open_ticket(app, ANA, "Sigo sin poder entrar", "¿Alguna novedad?")
    with app.sessions() as session:
        ticket = session.get(Ticket, again)
        assert ticket is not None
        found = search.similar(session, ticket)
        assert found["same_requester"] == [first]
        detail = ticket_detail(session, first)
    assert detail["similar"]["related"] == [related]


def test_agents_find_and_filter_tickets_from_the_cli(tmp_path: Path) -> None:
    for sender, subject, body in (
        ("ana@clinica.example", "Factura duplicada", "Me cobraron dos facturas."),
        ("luis@correo.example", "Cita", "Quiero reagendar mi cita."),
    ):
        assert (
            buzon(["ingest"], tmp_path, stdin=mail(sender, subject, body).decode()).returncode == 0
        )
    found = buzon(["tickets", "search", "factura"], tmp_path)
    assert found.returncode == 0 and found.stdout.startswith("#1 ")
    assert len(found.stdout.splitlines()) == 1
    listed = buzon(["tickets", "list", "--status", "Enviado", "--search", "citas"], tmp_path)
    assert listed.returncode == 0 and listed.stdout.startswith("#2 ")
    opened = buzon(["tickets", "list", "--status", "abiertos"], tmp_path)
    assert len(opened.stdout.splitlines()) == 2
    wrong = buzon(["tickets", "list", "--status", "pendiente"], tmp_path)
    assert wrong.returncode != 0 and "unknown status 'pendiente'" in wrong.stderr
    wrong = buzon(["tickets", "list", "--category", "ventas"], tmp_path)
    assert wrong.returncode != 0 and "urgent_emergency" in wrong.stderr  # lists the valid ones
    moved = buzon(["tickets", "status", "1", "en curso"], tmp_path)
    assert moved.returncode == 0, moved.stderr
    assert buzon(["tickets", "list", "--status", "in_progress"], tmp_path).stdout.startswith("#1 ")
