"""The IMAP poller against a real, private Dovecot: exactly once, push-fast, robust."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select

from daemon.intake.imap_poller import ImapPoller, mailbox_status
from daemon.wiring import App
from tests.fixtures.dovecot import (
    CAPABILITY_WITHOUT_IDLE,
    CAPABILITY_WITHOUT_MOVE,
    Dovecot,
    customer_mail,
    imap_app,
    running,
    wait_until,
)
from tests.helpers import block_attachment_store, count
from tickets.inbox import accept
from tickets.ingest import process
from tickets.models import Article, ImapMailboxState, RawMessage, Ticket

pytestmark = pytest.mark.dovecot

SEEN = b"\\Seen"


def poller(app: App) -> ImapPoller:
    return app.imap_poller(app.settings.imap.mailboxes[0])


def inbound_articles(app: App) -> int:
    """Customers' mails on tickets (our acknowledgements are articles too)."""
    return count(app, Article, Article.kind == "inbound")


def wait_for(condition: Callable[[], object], what: str, timeout: float = 20) -> None:
    wait_until(condition, timeout, what)


def state(app: App) -> ImapMailboxState:
    with app.sessions() as session:
        return session.get(ImapMailboxState, "soporte") or ImapMailboxState(last_uid=0)


# --- exactly once -------------------------------------------------------------------------


def test_backlog_is_ingested_once_and_a_restart_fetches_nothing_again(
    tmp_path: Path, dovecot: Dovecot
) -> None:
    dovecot.append_many(customer_mail(n) for n in range(500))
    app = imap_app(tmp_path, dovecot, batch_size=40)
    with running(poller(app)):
        wait_for(lambda: count(app, Ticket) == 500, "500 tickets", 60)
        wait_for(lambda: state(app).last_uid == 500, "last_uid 500")
    assert all(SEEN in flags for flags in dovecot.flags().values())
    with running(poller(app)) as again:
        wait_for(again.working.is_set, "the second poller to work the mailbox")
    assert count(app, Ticket) == 500 and count(app, RawMessage) == 500
    assert count(app, RawMessage, RawMessage.state != "processed") == 0


def test_a_fetched_batch_is_stored_with_one_commit_and_processed_as_one_batch(
    tmp_path: Path, dovecot: Dovecot
) -> None:
    dovecot.append_many(customer_mail(n) for n in range(12))
    app = imap_app(tmp_path, dovecot, batch_size=12)
    inserts = [0]  # rows inserted into raw_messages since the last commit
    per_commit: list[int] = []

    def counted(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("INSERT INTO raw_messages"):
            inserts[0] += 1

    def committed(conn: Any) -> None:
        if inserts[0]:
            per_commit.append(inserts[0])
        inserts[0] = 0

    the_poller = poller(app)
    batches: list[list[int]] = []
    desk_batch = the_poller.ingest_batch
    assert desk_batch is not None

    def ingest_batch(raw_ids: list[int]) -> list[str]:
        batches.append(list(raw_ids))
        return desk_batch(raw_ids)

    the_poller.ingest_batch = ingest_batch
    event.listen(app.engine, "before_cursor_execute", counted)
    event.listen(app.engine, "commit", committed)
    with running(the_poller):
        wait_for(lambda: state(app).last_uid == 12, "last_uid 12")
    event.remove(app.engine, "before_cursor_execute", counted)
    event.remove(app.engine, "commit", committed)
    assert per_commit == [12]  # the twelve rows stored in one transaction
    assert [len(b) for b in batches] == [12]
    assert count(app, Ticket) == 12
    assert count(app, RawMessage, RawMessage.state != "processed") == 0


def test_a_mail_already_read_in_outlook_is_still_ingested(tmp_path: Path, dovecot: Dovecot) -> None:
    dovecot.append(customer_mail(1), flags=[SEEN])
    app = imap_app(tmp_path, dovecot)
    with running(poller(app)):
        wait_for(lambda: count(app, Ticket) == 1, "the read mail's ticket")


def test_a_mail_already_received_over_smtp_is_not_doubled(tmp_path: Path, dovecot: Dovecot) -> None:
    app = imap_app(tmp_path, dovecot)
    raw = customer_mail(1)
    via_smtp = b"Received: from mx.clinica.example by buzon; Mon, 3 Mar 2025 10:00:00 +0000\r\n"
    process(app.sessions, app.policy, accept(app.sessions, via_smtp + raw, "smtp", {}))
    dovecot.append(raw)
    with running(poller(app)):
        wait_for(lambda: SEEN in dovecot.flags()[1], "the IMAP copy to be handled")
    assert count(app, Ticket) == 1 and inbound_articles(app) == 1
    with app.sessions() as session:
        imap_row = session.scalars(select(RawMessage).where(RawMessage.source == "imap")).one()
        assert imap_row.state == "ignored" and "duplicate" in (imap_row.reason or "")


def test_a_uidvalidity_change_resynchronises_without_doubling(
    tmp_path: Path, dovecot: Dovecot, caplog: pytest.LogCaptureFixture
) -> None:
    mails = [customer_mail(n) for n in range(10)]
    dovecot.append_many(mails, folder="Soporte")
    app = imap_app(tmp_path, dovecot, folder="Soporte")
    with running(poller(app)):
        wait_for(lambda: count(app, Ticket) == 10, "10 tickets")
        before = state(app).uidvalidity
        # The folder is deleted and recreated under the running poller (as an admin
        # restoring a backup would): new UIDVALIDITY, the same mails, and two new ones.
        with dovecot.client() as imap:
            imap.delete_folder("Soporte")
            imap.create_folder("Soporte")
        dovecot.append_many([*mails, customer_mail(10), customer_mail(11)], folder="Soporte")
        wait_for(lambda: state(app).uidvalidity != before, "the new UIDVALIDITY")
        wait_for(lambda: state(app).last_uid == 12, "the resync to finish")
    assert count(app, Ticket) == 12 and inbound_articles(app) == 12
    assert count(app, RawMessage) == 12  # the same bytes reuse their stored row
    assert "UIDVALIDITY changed" in caplog.text


# --- push-fast ----------------------------------------------------------------------------


def test_a_mail_arriving_during_idle_becomes_a_ticket_within_two_seconds(
    tmp_path: Path, dovecot: Dovecot
) -> None:
    app = imap_app(tmp_path, dovecot, poll_interval=60)  # only IDLE can be this fast
    with running(poller(app)) as worker:
        wait_for(worker.working.is_set, "the poller to log in")
        started = time.monotonic()
        dovecot.append(customer_mail(1))
        wait_for(lambda: count(app, Ticket) == 1, "the ticket", 5)
        assert time.monotonic() - started < 2.0


def test_without_idle_it_polls(tmp_path: Path, dovecot_factory: Callable[..., Dovecot]) -> None:
    server = dovecot_factory(capability=CAPABILITY_WITHOUT_IDLE)
    app = imap_app(tmp_path, server, poll_interval=0.2)
    with running(poller(app)) as worker:
        wait_for(worker.working.is_set, "the poller to log in")
        server.append(customer_mail(1))
        wait_for(lambda: count(app, Ticket) == 1, "the polled ticket", 5)


# --- outages ------------------------------------------------------------------------------


def test_dovecot_killed_mid_run_loses_and_doubles_nothing(
    tmp_path: Path, dovecot: Dovecot, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="buzon.imap")
    dovecot.append_many(customer_mail(n) for n in range(300))
    app = imap_app(tmp_path, dovecot, batch_size=10)
    with running(poller(app)):
        wait_for(lambda: count(app, Ticket) >= 30, "the backlog to be under way")
        dovecot.kill()
        time.sleep(0.5)  # an outage long enough for several reconnect attempts
        dovecot.start()
        wait_for(lambda: count(app, Ticket) == 300, "the backlog after the restart", 60)
        dovecot.append(customer_mail(300))
        wait_for(lambda: count(app, Ticket) == 301, "a new mail after the restart")
    assert inbound_articles(app) == 301
    assert count(app, RawMessage, RawMessage.state != "processed") == 0
    outage = [r for r in caplog.records if "unavailable" in r.getMessage()]
    back = [r for r in caplog.records if "available again" in r.getMessage()]
    assert len(outage) == 1 and len(back) == 1, caplog.text
    assert dovecot.password not in caplog.text


# --- after ingest -------------------------------------------------------------------------


@pytest.mark.parametrize("after", ["seen", "move", "delete", "move-without-MOVE"])
def test_after_ingest_actions(
    tmp_path: Path, dovecot_factory: Callable[..., Dovecot], after: str
) -> None:
    without_move = after == "move-without-MOVE"
    server = dovecot_factory(capability=CAPABILITY_WITHOUT_MOVE if without_move else None)
    if without_move:
        with server.client() as imap:
            assert not imap.has_capability("MOVE")
    server.append_many(customer_mail(n) for n in range(3))
    app = imap_app(tmp_path, server, after_ingest=after.removesuffix("-without-MOVE"))
    with running(poller(app)):
        wait_for(lambda: count(app, Ticket) == 3, "3 tickets")
        if after == "seen":
            wait_for(lambda: all(SEEN in f for f in server.flags().values()), "all seen")
        else:
            wait_for(lambda: server.uids() == [], "an empty INBOX")
    moved = server.uids("Processed")
    assert len(moved) == (3 if after.startswith("move") else 0)
    assert len(server.uids()) == (3 if after == "seen" else 0)


def test_a_message_that_fails_to_ingest_goes_to_the_error_folder(
    tmp_path: Path, dovecot: Dovecot
) -> None:
    app = imap_app(tmp_path, dovecot, after_ingest="move")
    block_attachment_store(app)  # storing the attachment will fail
    dovecot.append(customer_mail(1, attachments=[("a.pdf", "application/pdf", b"%PDF")]))
    dovecot.append(customer_mail(2))
    with running(poller(app)):
        wait_for(lambda: dovecot.uids() == [], "an empty INBOX")
    assert len(dovecot.uids("Errors")) == 1 and len(dovecot.uids("Processed")) == 1
    with app.sessions() as session:
        failed = session.scalars(select(RawMessage).where(RawMessage.state == "failed")).one()
        assert b"a.pdf" in failed.raw and failed.reason


def test_without_an_error_folder_a_failing_message_is_flagged(
    tmp_path: Path, dovecot: Dovecot
) -> None:
    app = imap_app(tmp_path, dovecot, error_folder="")
    block_attachment_store(app)
    dovecot.append(customer_mail(1, attachments=[("a.txt", "text/plain", b"1")]))
    with running(poller(app)):
        wait_for(lambda: b"\\Flagged" in dovecot.flags().get(1, ()), "the flag")
    assert SEEN not in dovecot.flags()[1]
    assert count(app, RawMessage, RawMessage.state == "failed") == 1


@pytest.mark.parametrize("policy", ["error_folder", "skip"])
def test_an_oversize_message_is_recorded_by_its_headers_only(
    tmp_path: Path, dovecot: Dovecot, policy: str
) -> None:
    big = customer_mail(1, attachments=[("big.bin", "application/octet-stream", b"x" * 20_000)])
    dovecot.append(big)
    dovecot.append(customer_mail(2))
    app = imap_app(tmp_path, dovecot, max_message_size=4096, oversize_policy=policy)
    with running(poller(app)):
        wait_for(lambda: state(app).last_uid == 2, "both messages handled")
    with app.sessions() as session:
        row = session.scalars(select(RawMessage).where(RawMessage.reason.like("oversize%"))).one()
        size = int((row.reason or "").removeprefix("oversize ").removesuffix(" bytes"))
        assert size > 20_000 and row.reason == f"oversize {size} bytes"
        assert row.raw.endswith(b"\r\n\r\n") and b"big.bin" not in row.raw
        assert row.state == ("failed" if policy == "error_folder" else "ignored")
    assert count(app, Ticket) == 1
    left = dovecot.uids()
    assert left == ([1, 2] if policy == "skip" else [2])
    if policy == "skip":
        assert SEEN not in dovecot.flags()[1]  # left for a human, untouched


def test_mailbox_status_reports_progress_and_the_lease(tmp_path: Path, dovecot: Dovecot) -> None:
    dovecot.append(customer_mail(1))
    app = imap_app(tmp_path, dovecot)
    with running(poller(app)):
        # The ticket commits before the poller records the UID as settled: wait for both.
        wait_for(lambda: count(app, Ticket) == 1, "the ticket")
        wait_for(
            lambda: mailbox_status(app.sessions, app.settings.imap.mailboxes)[0]["last_uid"] == 1,
            "the UID settled",
        )
        (status,) = mailbox_status(app.sessions, app.settings.imap.mailboxes)
        assert status["lease_holder"] == "poller-a"
    assert status["last_uid"] == 1 and status["uidvalidity"]
    assert status["last_success_at"] is not None and status["last_error"] is None
    assert status["token_age_seconds"] is None  # a password login
    (after,) = mailbox_status(app.sessions, app.settings.imap.mailboxes)
    assert after["lease_holder"] is None  # released on stop


@pytest.mark.parametrize("security", ["tls", "starttls"])
def test_tls_and_starttls_with_a_private_ca(
    tmp_path: Path, dovecot_factory: Callable[..., Dovecot], security: str
) -> None:
    server = dovecot_factory(tls=True)
    server.append(customer_mail(1))
    port = server.tls_port if security == "tls" else server.port
    app = imap_app(tmp_path, server, security=security, port=port, ca_file=str(server.ca_file))
    with running(poller(app)):
        wait_for(lambda: count(app, Ticket) == 1, "the ticket over TLS")
