"""The IMAP poller handing its batches to an ingest worker (as to the worker processes
with `ingest.processes` above 1): it stores and goes on fetching, the worker processes,
and a message changes on the server only once its row is final, across a restart too."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from daemon.intake.imap_poller import ImapPoller
from daemon.intake.ingest_worker import IngestWorker
from daemon.wiring import App
from tests.fixtures.dovecot import Dovecot, customer_mail, imap_app, running, wait_until
from tests.helpers import block_attachment_store, count
from tests.mailbuilder import mail
from tickets.models import ImapMailboxState, RawMessage, Ticket

pytestmark = pytest.mark.dovecot

SEEN = b"\\Seen"


def handing_over(app: App) -> ImapPoller:
    """A poller that stores and hands over; it fails the test if it processes itself."""

    def not_here(*_: object) -> Any:
        raise AssertionError("the poller processed mail it should have handed over")

    poller = app.imap_poller(app.settings.imap.mailboxes[0])
    poller.ingest, poller.ingest_batch = not_here, not_here
    poller.handoff = lambda: True  # a worker "runs" but is stopped: stored mail waits
    return poller


@contextlib.contextmanager
def worker_for(app: App, poller: ImapPoller) -> Iterator[IngestWorker]:
    """The ingest worker in a thread with its own event loop, as in a worker process:
    woken by the poller's handoff, and telling the poller when it finished mail."""
    worker = app.ingest_worker()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    worker.on_outcome = lambda _state: poller.processed.set()
    thread = threading.Thread(target=loop.run_until_complete, args=(worker.run(stop),))
    thread.start()

    def wake() -> bool:
        loop.call_soon_threadsafe(worker.wake.set)
        return True

    poller.handoff = wake
    try:
        yield worker
    finally:
        poller.handoff = lambda: True
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        assert not thread.is_alive(), "the worker did not stop"
        loop.close()


def last_uid(app: App) -> int:
    with app.sessions() as session:
        state = session.get(ImapMailboxState, "soporte")
        return state.last_uid if state is not None else 0


def unprocessed(app: App) -> int:
    return count(app, RawMessage, RawMessage.state.in_(("pending", "processing")))


def test_a_backlog_handed_to_the_worker_is_processed_once_and_then_marked(
    tmp_path: Path, dovecot: Dovecot
) -> None:
    dovecot.append_many(customer_mail(n) for n in range(120))
    app = imap_app(tmp_path, dovecot, batch_size=25)
    poller = handing_over(app)
    with running(poller), worker_for(app, poller) as worker:
        wait_until(lambda: last_uid(app) == 120, 60, "every message settled")
    assert count(app, Ticket) == 120 and count(app, RawMessage) == 120
    assert unprocessed(app) == 0 and sum(worker.outcomes.values()) == 120
    assert all(SEEN in flags for flags in dovecot.flags().values())
    assert poller.counts == {"processed": 120}


def test_a_handed_over_mail_is_marked_only_once_final_also_after_a_restart(
    tmp_path: Path, dovecot: Dovecot
) -> None:
    dovecot.append_many(customer_mail(n) for n in range(6))
    app = imap_app(tmp_path, dovecot, batch_size=4)
    poller = handing_over(app)
    with running(poller):  # no worker: stored and handed over, but nobody processes
        wait_until(lambda: count(app, RawMessage) == 6, 20, "the six stored")
        wait_until(lambda: poller._fetched == 6, 20, "the fetch to pass them")
        assert unprocessed(app) == 6
        assert not any(SEEN in flags for flags in dovecot.flags().values())
        assert last_uid(app) == 0  # nothing settled: a restart must see them all again
    dovecot.append(customer_mail(6))
    poller = handing_over(app)  # a restart: the stored six are found by their bytes
    with running(poller), worker_for(app, poller):
        wait_until(lambda: last_uid(app) == 7, 30, "all seven settled")
    assert count(app, RawMessage) == 7 and count(app, Ticket) == 7 and unprocessed(app) == 0
    assert all(SEEN in flags for flags in dovecot.flags().values())


def test_a_handed_over_mail_that_fails_goes_to_the_error_folder(
    tmp_path: Path, dovecot: Dovecot
) -> None:
    app = imap_app(tmp_path, dovecot, after_ingest="move")
    block_attachment_store(app)  # storing the attachment will fail
    dovecot.append(customer_mail(1, attachments=[("a.pdf", "application/pdf", b"%PDF")]))
    dovecot.append(customer_mail(2))
    poller = handing_over(app)
    with running(poller), worker_for(app, poller):
        wait_until(lambda: dovecot.uids() == [], 30, "an empty INBOX")
    assert len(dovecot.uids("Errors")) == 1 and len(dovecot.uids("Processed")) == 1
    with app.sessions() as session:
        failed = session.scalars(select(RawMessage).where(RawMessage.state == "failed")).one()
        assert b"a.pdf" in failed.raw
    assert last_uid(app) == 2


def test_a_reply_to_a_mail_in_flight_waits_for_it_and_joins_its_ticket(
    tmp_path: Path, dovecot: Dovecot
) -> None:
    first = customer_mail(1, msgid="<original-1@clinica.example>")
    reply = mail("Cliente 1 <cliente1@clinica.example>", "Re: Consulta 1", "Otra cosa",
                 in_reply_to="<original-1@clinica.example>")  # fmt: skip
    dovecot.append_many([first, reply, customer_mail(2)])
    app = imap_app(tmp_path, dovecot)
    poller = handing_over(app)
    with running(poller):  # no worker: the original stays in flight
        wait_until(lambda: poller._fetched == 3, 20, "the fetch to pass all three")
        assert count(app, RawMessage) == 2  # the reply is held back, not stored
        assert last_uid(app) == 0
    poller = handing_over(app)
    with running(poller), worker_for(app, poller):
        wait_until(lambda: last_uid(app) == 3, 30, "all three settled")
    assert count(app, RawMessage) == 3 and count(app, Ticket) == 2
    assert all(SEEN in flags for flags in dovecot.flags().values())


def test_the_poller_s_lookups_do_not_queue_for_sqlite_s_write_lock(
    tmp_path: Path, dovecot: Dovecot
) -> None:
    app = imap_app(tmp_path, dovecot)
    poller = handing_over(app)
    with app.engine.connect() as writer, writer.begin():  # BEGIN IMMEDIATE: the write lock
        started = time.monotonic()
        assert poller._stored_before(["0" * 64]) == {}
        assert poller._row_states([1]) == {}
        assert time.monotonic() - started < 2.0  # not the 30 s busy timeout


def test_until_a_worker_runs_the_poller_processes_its_batches_itself(
    tmp_path: Path, dovecot: Dovecot
) -> None:
    dovecot.append_many(customer_mail(n) for n in range(5))
    app = imap_app(tmp_path, dovecot, batch_size=2)
    poller = app.imap_poller(app.settings.imap.mailboxes[0])
    poller.handoff = lambda: False  # the worker processes are still starting
    with running(poller):
        wait_until(lambda: last_uid(app) == 5, 30, "all five settled")
    assert count(app, Ticket) == 5 and unprocessed(app) == 0
    assert poller.counts == {"processed": 5} and not poller._waiting
    assert all(SEEN in flags for flags in dovecot.flags().values())
