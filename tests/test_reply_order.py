"""A reply taken in while its original is still being processed by another worker waits
for it, instead of opening a ticket of its own (worker processes take batches side by
side; SMTP and the pipe have no poller to order them)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from daemon.wiring import App
from tests.helpers import count, make_app
from tests.mailbuilder import mail, message_id
from tickets.inbox import accept, accept_many, claim_pending
from tickets.models import RawMessage, RawState, Ticket

CUSTOMER = "Ana Ruiz <ana@clinica.example>"


@pytest.fixture
def order_app(tmp_path: Path, db_url: str) -> Iterator[App]:
    application = make_app(tmp_path, db_url, support_addresses=["soporte@soporte.example"])
    yield application
    application.engine.dispose()


def _conversation() -> tuple[bytes, bytes]:
    original = mail(CUSTOMER, "La receta no llega", "Hola, la receta electrónica no llega.")
    first = message_id(original).strip("<>")
    reply = mail(
        CUSTOMER,
        "Re: La receta no llega",
        "Se me olvidó: es la del doctor Pérez.",
        in_reply_to=f"<{first}>",
        references=[f"<{first}>"],
    )
    return original, reply


def _row(app: App, raw_id: int) -> RawMessage:
    with app.sessions() as s:
        row = s.get(RawMessage, raw_id)
        assert row is not None
        s.expunge(row)
        return row


@pytest.mark.parametrize("path", ["batch", "one_by_one"])
def test_a_reply_waits_while_its_original_is_in_another_workers_hands(
    order_app: App, path: str
) -> None:
    original, reply = _conversation()
    first, second = accept_many(order_app.sessions, [(original, {}), (reply, {})], "smtp")
    # Intake records each mail's own Message-ID: what a worker looks for.
    assert _row(order_app, first).message_id == message_id(original).strip("<>")
    assert claim_pending(order_app.sessions, "worker-a", 1, 300) == [first]
    assert claim_pending(order_app.sessions, "worker-b", 1, 300) == [second]

    ingest = order_app.desk.ingest_batch if path == "batch" else _one_by_one(order_app)
    (waiting,) = ingest([second])
    assert waiting.state == RawState.PENDING and waiting.ticket_id is None
    row = _row(order_app, second)
    assert (row.state, row.attempts) == (RawState.PENDING, 0)
    assert row.retry_at is not None and row.claimed_by is None
    assert count(order_app, Ticket) == 0

    (opened,) = order_app.desk.ingest_batch([first])
    (threaded,) = ingest([second])
    assert opened.state == threaded.state == RawState.PROCESSED
    assert threaded.ticket_id == opened.ticket_id
    assert count(order_app, Ticket) == 1


def _one_by_one(app: App):  # type: ignore[no-untyped-def]
    return lambda ids: [app.desk.ingest(raw_id) for raw_id in ids]


def test_a_reply_to_mail_we_never_had_opens_its_ticket_at_once(order_app: App) -> None:
    reply = mail(
        CUSTOMER,
        "Re: Turno del martes",
        "Respondo al correo de la clínica.",
        in_reply_to="<otro-sistema-123@clinica.example>",
    )
    raw_id = accept(order_app.sessions, reply, "smtp")
    (outcome,) = order_app.desk.ingest_batch([raw_id])
    assert outcome.state == RawState.PROCESSED and outcome.ticket_id is not None


def test_a_reply_to_a_finished_original_threads_without_waiting(order_app: App) -> None:
    original, reply = _conversation()
    first = accept(order_app.sessions, original, "smtp")
    (opened,) = order_app.desk.ingest_batch([first])
    second = accept(order_app.sessions, reply, "smtp")
    (threaded,) = order_app.desk.ingest_batch([second])
    assert threaded.ticket_id == opened.ticket_id
    with order_app.sessions() as s:
        assert s.scalar(select(RawMessage.retry_at).where(RawMessage.id == second)) is None
