"""Durable acceptance: 250 only after the commit, 451 when the store cannot commit.

"The store cannot commit" is made real, not mocked:

- *locked*: another session holds the write lock, as a long migration, a VACUUM FULL or a
  stuck writer does. On SQLite it is `BEGIN IMMEDIATE` on a second connection (SQLite's
  everyday failure, "database is locked"); on PostgreSQL `LOCK TABLE raw_messages IN
  EXCLUSIVE MODE`. The intake gives up after `smtp.store_timeout` and answers 451; once the
  lock goes, the same mail sent again makes exactly one ticket.
- *down*: the database server refuses connections (a PostgreSQL URL on a closed port).
"""

from __future__ import annotations

import smtplib
import socket
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from daemon.config import load_settings
from daemon.wiring import App
from tests.fixtures.smtp_listener import serve_smtp
from tests.helpers import count, make_app
from tests.mailbuilder import mail, message_id
from tickets.models import RawMessage, Ticket

SUPPORT = "soporte@soporte.example"
ANA = "ana@clinica.example"


@contextmanager
def write_lock(url: str) -> Iterator[None]:
    """Hold the store's write lock from another session until the block ends."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(make_url(url).database or "", isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("LOCK TABLE raw_messages IN EXCLUSIVE MODE"))
            yield
            conn.rollback()
    finally:
        engine.dispose()


def rows_seen_by_a_reader(url: str) -> int:
    """Counted on a plain connection: buzón's own sessions begin with a write lock."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.scalar(text("SELECT count(*) FROM raw_messages")) or 0
    finally:
        engine.dispose()


def test_locked_store_answers_451_and_the_retry_makes_one_ticket(
    tmp_path: Path, db_url: str
) -> None:
    app = make_app(tmp_path, db_url, support_addresses=[SUPPORT])
    first = mail(f"Ana <{ANA}>", "Antes del bloqueo", "Todo bien")
    retried = mail(f"Ana <{ANA}>", "Durante el bloqueo", "No puedo entrar")
    try:
        with serve_smtp(app, store_timeout=0.5) as server, server.client() as client:
            client.sendmail(ANA, [SUPPORT], first)
            with write_lock(db_url):
                with pytest.raises(smtplib.SMTPDataError) as err:
                    client.sendmail(ANA, [SUPPORT], retried)
                assert (err.value.smtp_code, err.value.smtp_error[:5]) == (451, b"4.3.0")
                assert rows_seen_by_a_reader(db_url) == 1  # nothing half-written
            # The sender retries the same bytes once the store is back.
            assert client.sendmail(ANA, [SUPPORT], retried) == {}
            server.wait_processed()
        assert count(app, RawMessage) == 2
        assert count(app, RawMessage, RawMessage.message_id == message_id(retried).strip("<>")) == 1
        assert count(app, Ticket) == 2
        assert count(app, RawMessage, RawMessage.state != "processed") == 0
    finally:
        app.engine.dispose()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("lmtp", [False, True], ids=["smtp", "lmtp"])
def test_database_down_answers_451_to_every_recipient(tmp_path: Path, lmtp: bool) -> None:
    url = f"postgresql+psycopg://buzon@127.0.0.1:{_closed_port()}/buzon"
    settings = load_settings(
        None,
        data_dir=tmp_path / "data",
        database_url=url,
        secret_key="test-secret-0123456789",
        support_addresses=[SUPPORT],
    )
    app = App(settings)  # not prepared: there is no database to prepare
    rcpts = [SUPPORT, "soporte+ventas@soporte.example"]
    config = {"lmtp": lmtp, "store_timeout": 1}
    with serve_smtp(app, process=False, **config) as server, server.client() as client:
        client.ehlo()
        client.mail(ANA)
        for rcpt in rcpts:
            assert client.rcpt(rcpt)[0] == 250
        replies = [client.data(mail(ANA, "Sin base", "x"))]
        if lmtp:
            replies.append(client.getreply())
    assert [code for code, _ in replies] == [451] * (2 if lmtp else 1)
    assert all(message.startswith(b"4.3.0") for _, message in replies)
    app.engine.dispose()
