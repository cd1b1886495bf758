"""The satisfaction survey on close (seed 004): parsing answers and recording them."""

from __future__ import annotations

from email.utils import parseaddr
from pathlib import Path

import pytest
from sqlalchemy import select

from daemon.wiring import App
from tests.fixtures.smtp_sink import SmtpSink
from tests.helpers import (
    AGENT,
    ANA,
    act,
    count,
    events,
    ingest,
    new_ticket,
    outbox_bytes,
    relay_app,
)
from tests.mailbuilder import mail
from tickets import actions
from tickets.models import OutboxMessage, Ticket
from tickets.survey import parse_rating


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("5", 5),
        ("  4/5 gracias", 4),
        ("3 de 5", 3),
        ("1.", 1),
        ("Excelente servicio", 5),
        ("Muy bien, gracias por la ayuda", 5),
        ("bien", 4),
        ("Bueno", 4),
        ("Regular, tardaron mucho", 3),
        ("mal", 2),
        ("Muy mal", 1),
        ("Pésimo", 1),
        ("Excellent support!", 5),
        ("good", 4),
        ("OK", 3),
        ("bad", 2),
        ("Terrible.", 1),
        ("\n\n5\nMuy amables", 5),
    ],
)
def test_ratings_in_digits_and_words(text: str, value: int) -> None:
    rating = parse_rating(text)
    assert rating is not None and rating.value == value


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Sigue fallando el sistema de citas",
        "15 minutos y nada",
        "6",
        "no fue bueno",
        "malos modos del personal y además tardaron tres semanas en responder mi consulta",
        "2.5",
    ],
)
def test_text_without_a_rating(text: str) -> None:
    assert parse_rating(text) is None


def test_the_comment_keeps_what_was_written() -> None:
    rating = parse_rating("5\nMuy amables, gracias.")
    assert rating is not None and rating.comment == "5\nMuy amables, gracias."


# --- on a real ticket ------------------------------------------------------------------------


def closed_ticket(app: App) -> tuple[int, OutboxMessage]:
    number, _ = new_ticket(app)
    act(app, number, lambda s, t: actions.set_status(s, t, "resolved", AGENT))
    act(app, number, lambda s, t: actions.set_status(s, t, "closed", AGENT))
    with app.sessions() as session:
        survey = session.scalar(
            select(OutboxMessage).where(
                OutboxMessage.ticket_id == number, OutboxMessage.kind == "survey"
            )
        )
    assert survey is not None
    return number, survey


@pytest.mark.parametrize(("answer", "value"), [("5", 5), ("Excelente servicio", 5)])
def test_survey_reply_records_the_rating_and_opens_no_ticket(
    rapp: App, answer: str, value: int
) -> None:
    number, survey = closed_ticket(rapp)
    reply = mail(ANA, f"Re: [#{number}] Cerrado", answer, in_reply_to=survey.message_id)
    outcome = ingest(rapp, reply)
    assert (outcome.state, outcome.ticket_id, outcome.reason) == (
        "processed",
        number,
        "survey answer",
    )
    assert count(rapp, Ticket) == 1
    with rapp.sessions() as session:
        ticket = session.get(Ticket, number)
        assert ticket is not None
        assert (ticket.status, ticket.survey_rating) == ("closed", value)
        assert ticket.survey_comment == answer
    [event] = events(rapp, number, "survey")
    assert event.new_value == str(value) and event.actor == "ana@clinica.example"
    assert ingest(rapp, reply).state == "ignored"  # the same mail again: a duplicate


def test_survey_answer_through_the_plus_address(rapp: App) -> None:
    number, survey = closed_ticket(rapp)
    reply_to = parseaddr(
        next(
            line
            for line in outbox_bytes(rapp, survey).decode().splitlines()
            if line.startswith("Reply-To:")
        )
    )[1]
    outcome = ingest(rapp, mail(ANA, "Encuesta", "4", to=reply_to))
    assert outcome.ticket_id == number and outcome.reason == "survey answer"
    with rapp.sessions() as session:
        ticket = session.get(Ticket, number)
        assert ticket is not None and ticket.survey_rating == 4


def test_a_reply_without_a_rating_still_opens_a_linked_ticket(rapp: App) -> None:
    number, survey = closed_ticket(rapp)
    reply = mail(
        ANA, f"Re: [#{number}]", "Sigue fallando el sistema", in_reply_to=survey.message_id
    )
    outcome = ingest(rapp, reply)
    assert outcome.state == "processed" and outcome.ticket_id != number
    with rapp.sessions() as session:
        follow_up = session.get(Ticket, outcome.ticket_id)
        assert follow_up is not None and follow_up.parent_id == number
        closed = session.get(Ticket, number)
        assert closed is not None and closed.survey_rating is None


def test_without_the_survey_closing_sends_the_plain_status_mail(
    tmp_path: Path, db_url: str, sink: SmtpSink
) -> None:
    app = relay_app(tmp_path, db_url, sink, sla={"survey": False})
    try:
        number, _ = new_ticket(app)
        act(app, number, lambda s, t: actions.set_status(s, t, "closed", AGENT))
        with app.sessions() as session:
            kinds = list(
                session.scalars(select(OutboxMessage.kind).where(OutboxMessage.ticket_id == number))
            )
        assert kinds == ["acknowledgement", "status"]
        reply = mail(ANA, f"Re: [#{number}]", "5")
        assert ingest(app, reply).ticket_id != number  # no survey: a new linked ticket
    finally:
        app.engine.dispose()
