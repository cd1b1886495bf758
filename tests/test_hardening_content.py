"""Issue 17, part B: hostile content, transient failures, threading by a leaked Message-ID
and backscatter, each against the real component (CLI process, SMTP listener, tmpfs,
SQLite and PostgreSQL, the SMTP sink)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from sqlalchemy import create_engine, event, select, text
from sqlalchemy.exc import DBAPIError, OperationalError

from daemon.intake.ingest_worker import IngestWorker
from daemon.wiring import App
from tests.fixtures.smtp_listener import serve_smtp
from tests.fixtures.smtp_sink import SmtpSink
from tests.helpers import (
    AGENT,
    ANA,
    LUIS,
    act,
    buzon,
    count,
    deliver,
    events,
    free_port,
    ingest,
    make_app,
    missing_server,
    relay_app,
)
from tests.mailbuilder import mail, message_id
from tickets import actions
from tickets.inbox import accept, claim_pending
from tickets.ingest import Outcome, is_transient
from tickets.models import Article, Participant, RawMessage, Ticket

OUTSIDER = "Eva Intrusa <eva@otra.example>"


def raw_mail(headers: dict[str, str], body: str) -> bytes:
    """A mail written byte by byte: the hostile headers no library would fold for us."""
    lines = [f"{name}: {value}" for name, value in headers.items()]
    lines += ["MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8", ""]
    return ("\r\n".join(lines) + "\r\n" + body + "\r\n").encode()


def state_of(app: App, raw_id: int) -> RawMessage:
    with app.sessions() as s:
        row = s.get(RawMessage, raw_id)
        assert row is not None
        return row


# --- Serious #2: a long Message-ID, twice, never crash-loops the daemon ----------------------

LONG_ID = "x" * 1500 + "@largo.example"
SECRET_BODY = "cuerpo-secreto-que-no-va-al-log"


def long_id_mail() -> bytes:
    return raw_mail(
        {
            "From": ANA,
            "To": "soporte@soporte.example",
            "Subject": "Message-ID larguísimo",
            "Date": "Mon, 03 Mar 2025 10:00:00 +0000",
            "Message-ID": f"<{LONG_ID}>",
        },
        SECRET_BODY,
    )


def _smtp_process(workdir: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUZON_")}
    env.update(
        BUZON_DATA_DIR=str(workdir / "data"),
        BUZON_SECRET_KEY="test-secret-0123456789",
        BUZON_SUPPORT_ADDRESSES='["soporte@soporte.example"]',
        BUZON_LOG__JSON="true",
    )
    port, http = free_port(), free_port()
    cmd = [sys.executable, "-m", "daemon", "smtp", "--listen", f"127.0.0.1:{port}"]
    cmd += ["--http", f"127.0.0.1:{http}"]
    log = open(workdir / "smtp.log", "wb")  # noqa: SIM115 - closed by the test
    return subprocess.Popen(cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)


def test_long_message_id_twice_through_the_pipe_then_smtp_stays_up(tmp_path: Path) -> None:
    raw = long_id_mail().decode()
    first = buzon(["ingest"], tmp_path, stdin=raw)
    assert first.returncode == 0 and "processed ticket #1" in first.stdout, first.stderr
    second = buzon(["ingest"], tmp_path, stdin=raw)
    assert second.returncode == 0, second.stderr
    assert "ignored" in second.stdout and "duplicate" in second.stdout
    # A third copy waits in the queue for the listener's worker (as after a crash).
    db = sqlite3.connect(tmp_path / "data" / "buzon.db")
    db.execute(
        "INSERT INTO raw_messages (source, envelope, raw, sha256, size, state, attempts, "
        "received_at, retries) VALUES ('pipe', '{}', ?, 'x', ?, 'pending', 0, "
        "'2025-01-01 00:00:00', 0)",
        (raw.encode(), len(raw)),
    )
    db.commit()
    proc = _smtp_process(tmp_path)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            (pending,) = db.execute(
                "SELECT count(*) FROM raw_messages WHERE state IN ('pending', 'processing')"
            ).fetchone()
            if not pending:
                break
            time.sleep(0.1)
        time.sleep(1.5)  # the crash came about a second after the start
        assert proc.poll() is None, (tmp_path / "smtp.log").read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
    states = [s for (s,) in db.execute("SELECT state FROM raw_messages ORDER BY id")]
    assert states == ["processed", "ignored", "ignored"]
    (tickets,) = db.execute("SELECT count(*) FROM tickets").fetchone()
    assert tickets == 1
    assert rc == 0
    assert SECRET_BODY not in (tmp_path / "smtp.log").read_text()


def test_an_unexpected_error_fails_that_mail_and_the_worker_goes_on(app: App) -> None:
    ids = [accept(app.sessions, mail(ANA, f"Consulta {n}", "hola"), "smtp") for n in range(3)]

    def ingest_or_explode(raw_id: int) -> Outcome:
        if raw_id == ids[1]:
            raise RuntimeError("boom\nsecond line, where a driver puts the parameters")
        return app.desk.ingest(raw_id)

    worker = IngestWorker(app.sessions, ingest_or_explode, instance="w1")
    assert worker.drain() == 3  # no exception: the worker goes on
    assert [state_of(app, i).state for i in ids] == ["processed", "failed", "processed"]
    failed = state_of(app, ids[1])
    assert (failed.reason, failed.attempts) == ("RuntimeError: boom", 1)


# --- Serious #4: a transient error retries with backoff, never ends `failed` --------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs where the attachments go; grown later to give the space back."""
    where = tmp_path / "data" / "attachments"
    where.mkdir(parents=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        missing_server("tmpfs", f"mount -t tmpfs not permitted: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_full_attachment_disk_retries_and_nothing_stays_failed(
    tmp_path: Path, db_url: str, small_disk: Path
) -> None:
    app = make_app(
        tmp_path,
        db_url,
        support_addresses=["soporte@soporte.example"],
        ingest={"retry_base_seconds": 0.2, "retry_max_seconds": 0.5},
    )
    try:
        payloads = [bytes([n]) * 400_000 for n in range(4)]  # 1.6 MB on a 1 MiB disk
        ids = [
            accept(
                app.sessions,
                mail(
                    ANA, f"Adjunto {n}", "ver", attachments=[("informe.pdf", "application/pdf", p)]
                ),
                "smtp",
            )  # fmt: skip
            for n, p in enumerate(payloads)
        ]
        worker = app.ingest_worker()
        worker.drain()
        rows = [state_of(app, i) for i in ids]
        assert [r.state for r in rows].count("processed") == 2
        waiting = [r for r in rows if r.state != "processed"]
        assert all(r.state == "pending" and r.attempts == 0 for r in waiting), rows
        assert all("No space" in (r.reason or "") for r in waiting)
        assert claim_pending(app.sessions, "other", 10, 300) == []  # not before its time
        for _ in range(3):  # the disk is still full: still pending, never failed
            time.sleep(0.6)
            worker.drain()
        assert {state_of(app, r.id).state for r in waiting} == {"pending"}
        subprocess.run(["mount", "-o", "remount,size=20m", str(small_disk)], check=True)
        time.sleep(0.6)
        worker.drain()
        assert [state_of(app, i).state for i in ids] == ["processed"] * 4
        assert count(app, Ticket) == 4
    finally:
        app.engine.dispose()


def test_a_database_connection_killed_mid_mail_retries_later(tmp_path: Path, pg_url: str) -> None:
    """PostgreSQL ends the worker's session while it inserts a mail (what a restart or a
    failover does): the mail goes back to the queue, its attempts untouched."""
    # A backoff longer than processing the other two mails takes on a loaded machine.
    app = make_app(tmp_path, pg_url, ingest={"retry_base_seconds": 2.0, "retry_max_seconds": 2.0})
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    killed: list[int] = []

    @event.listens_for(app.engine, "before_cursor_execute")
    def kill_once(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("INSERT INTO articles") and not killed:
            pid = conn.connection.dbapi_connection.info.backend_pid
            killed.append(pid)
            with admin.connect() as other:
                other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})

    try:
        ids = [accept(app.sessions, mail(ANA, f"Consulta {n}", "hola"), "smtp") for n in range(3)]
        worker = app.ingest_worker()
        worker.drain()
        assert killed
        first = state_of(app, ids[0])
        assert (first.state, first.attempts, first.retries) == ("pending", 0, 1), first.reason
        assert [state_of(app, i).state for i in ids[1:]] == ["processed", "processed"]
        time.sleep(2.1)
        worker.drain()
        assert [state_of(app, i).state for i in ids] == ["processed"] * 3
    finally:
        app.engine.dispose()
        admin.dispose()


def test_an_outage_mid_batch_gives_the_rest_back_at_the_next_pass(app: App) -> None:
    ids = [accept(app.sessions, mail(ANA, f"Consulta {n}", "hola"), "smtp") for n in range(3)]
    away = create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/x")
    outage: list[OperationalError] = []
    try:
        away.connect()
    except OperationalError as exc:  # a real "connection refused"
        outage.append(exc)

    def ingest_during_outage(raw_id: int) -> Outcome:
        if raw_id == ids[1] and len(outage) == 1:
            outage.append(outage[0])
            raise outage[0]
        return app.desk.ingest(raw_id)

    worker = IngestWorker(app.sessions, ingest_during_outage, instance="w1")
    with pytest.raises(OperationalError):
        worker.run_once()
    assert [state_of(app, i).state for i in ids] == ["processed", "processing", "processing"]
    assert worker.drain() == 2  # released at once, not after stale_claim_seconds
    assert [state_of(app, i).state for i in ids] == ["processed"] * 3
    away.dispose()


def test_errors_are_classified_by_what_raised_them(tmp_path: Path, pg_url: str) -> None:
    # The database is away: transient.
    away = create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/x")
    with pytest.raises(OperationalError) as refused:
        away.connect()
    assert is_transient(refused.value)
    # SQLite busy: transient.
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")
    busy = create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.1})
    with pytest.raises(OperationalError) as locked, busy.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (1)"))
    assert is_transient(locked.value)
    holder.close()
    # Our statement refused for its content (index row too big): not transient.
    engine = create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE big (v text)"))
        conn.execute(text("CREATE INDEX ix_big ON big (v)"))
    with pytest.raises(DBAPIError) as too_big, engine.begin() as conn:
        conn.execute(text("INSERT INTO big VALUES (:v)"), {"v": os.urandom(5000).hex()})
    assert not is_transient(too_big.value)
    assert is_transient(OSError(28, "No space left on device"))
    assert not is_transient(ValueError("bad content"))
    engine.dispose()
    away.dispose()
    busy.dispose()


# --- Serious #5: what SQLite accepts, PostgreSQL stores too ---------------------------------


def test_nul_and_oversized_fields_are_stored_on_both_databases(app: App) -> None:
    long_cc = "c" * 330 + "@clinica.example"
    raw = raw_mail(
        {
            "From": "Ana\x00 Pérez <ana@clinica.example>",
            "To": "soporte@soporte.example",
            "Cc": f"{long_cc}, {LUIS}",
            "Subject": "Agenda\x00 rota",
            "Date": "Mon, 03 Mar 2025 10:00:00 +0000",
            "Message-ID": "<nul-1@clinica.example>",
        },
        "Hola\x00, no carga.",
    )
    outcome = ingest(app, raw)
    assert outcome.state == "processed", outcome.reason
    with app.sessions() as s:
        ticket = s.get(Ticket, outcome.ticket_id)
        assert ticket is not None and "\x00" not in ticket.subject
        inbound = (Article.ticket_id == ticket.id, Article.kind == "inbound")
        article = s.scalars(select(Article).where(*inbound)).one()
        assert "\x00" not in article.text and "no carga" in article.text
        assert "\x00" not in (article.from_name or "") and "\x00" not in article.subject
        emails = set(s.scalars(select(Participant.email).where(Participant.ticket_id == ticket.id)))
    assert emails == {"ana@clinica.example", "luis@clinica.example"}
    assert ingest(app, raw).state == "ignored"


def test_multibyte_message_id_of_3_kb_is_a_mail_not_an_outage(app: App) -> None:
    mid = "ñ" * 1400 + "@clinica.example"  # 2.8 KB in UTF-8
    raws = [mail(ANA, f"Normal {n}", "hola") for n in range(3)]
    hostile = raw_mail(
        {
            "From": ANA,
            "To": "soporte@soporte.example",
            "Subject": "ID largo",
            "Date": "Mon, 03 Mar 2025 10:00:00 +0000",
            "Message-ID": f"<{mid}>",
        },
        "hola",
    )
    ids = [accept(app.sessions, r, "smtp") for r in (raws[0], hostile, raws[1], hostile, raws[2])]
    worker = app.ingest_worker()
    worker.drain()
    states = [state_of(app, i).state for i in ids]
    assert states == ["processed", "processed", "processed", "ignored", "processed"]
    reply = raw_mail(
        {"From": ANA, "To": "soporte@soporte.example", "Subject": "Re: ID largo",
         "Message-ID": "<r1@clinica.example>", "In-Reply-To": f"<{mid}>"},
        "sigo sin poder",
    )  # fmt: skip
    assert ingest(app, reply).ticket_id == state_of(app, ids[1]).ticket_id
    assert count(app, RawMessage, RawMessage.state == "processing") == 0


# --- Serious #7: a leaked Message-ID is not a key to the ticket -----------------------------


def test_outsider_with_a_customers_message_id_opens_a_new_ticket(app: App) -> None:
    first = mail(ANA, "Mis estudios", "Adjunto mis estudios.", cc=LUIS)
    number = ingest(app, first).ticket_id
    leaked = message_id(first)
    intruder = ingest(app, mail(OUTSIDER, "Re: Mis estudios", "mándenme todo",
                                in_reply_to=leaked, references=[leaked]))  # fmt: skip
    assert intruder.state == "processed" and intruder.ticket_id != number
    with app.sessions() as s:
        emails = set(s.scalars(select(Participant.email).where(Participant.ticket_id == number)))
    assert "eva@otra.example" not in emails
    # A participant (the CC'd colleague) still threads by it; so do our signed ids.
    colleague = ingest(app, mail(LUIS, "Re: Mis estudios", "gracias", in_reply_to=leaked))
    assert colleague.ticket_id == number
    with app.sessions() as s:
        outbound = (Article.ticket_id == number, Article.kind == "outbound")
        ours = s.scalars(select(Article.message_id).where(*outbound)).first()
    assert ours is not None  # the acknowledgement
    signed = ingest(app, mail(OUTSIDER, "Re: acuse", "respondo al acuse", in_reply_to=f"<{ours}>"))
    assert signed.ticket_id == number


def test_known_message_id_joins_for_everyone_when_configured(tmp_path: Path, db_url: str) -> None:
    app = make_app(tmp_path, db_url, message_id_requires_participant=False)
    try:
        first = mail(ANA, "Mis estudios", "hola", to="soporte@localhost")
        number = ingest(app, first).ticket_id
        other = ingest(app, mail(OUTSIDER, "Re: x", "y", in_reply_to=message_id(first),
                                 to="soporte@localhost"))  # fmt: skip
        assert other.ticket_id == number
    finally:
        app.engine.dispose()


# --- Serious #8: backscatter ------------------------------------------------------------------


def _forged(sender: str, strangers: list[str], subject: str) -> bytes:
    headers = {"From": sender, "To": "soporte@soporte.example", "Subject": subject,
               "Message-ID": f"<{subject.replace(' ', '.')}@forjado.example>",
               "Cc": ",\r\n ".join(strangers)}  # fmt: skip
    return raw_mail(headers, "Compre ya")


def test_forged_mail_with_100_ccs_mails_a_few_and_counts_the_rest(
    tmp_path: Path, sink: SmtpSink
) -> None:
    app = relay_app(tmp_path, f"sqlite:///{tmp_path / 'buzon.db'}", sink)
    strangers = [f"victima{n}@lejos.example" for n in range(100)]
    try:
        with serve_smtp(app) as server, server.client() as client:
            raw = _forged("spammer@forjado.example", strangers, "Oferta 0")
            client.sendmail("spammer@forjado.example", ["soporte@soporte.example"], raw)
            server.wait_processed()
            for n in range(1, 6):  # the same strangers, CC'd on five more forged mails
                raw = _forged(f"spammer{n}@forjado.example", strangers, f"Oferta {n}")
                client.sendmail("x@forjado.example", ["soporte@soporte.example"], raw)
            server.wait_processed()
        assert count(app, Ticket) == 6
        watcher = (Participant.ticket_id == 1, Participant.role == "watcher")
        assert count(app, Participant, *watcher) == 10  # ingest.max_new_watchers
        capped = [e for e in events(app, 1, "notify_refused") if e.data["reason"] == "watcher_cap"]
        assert len(capped) == 90
        deliver(app)
        mailed: dict[str, int] = {}
        for item in sink.messages:
            for rcpt in item.rcpt_tos:
                mailed[rcpt] = mailed.get(rcpt, 0) + 1
        victims = {r: n for r, n in mailed.items() if r.endswith("@lejos.example")}
        assert len(victims) == 10  # only those within the cap of a ticket
        assert max(victims.values()) <= 3  # outbound.stranger_tickets_per_window
        assert len(sink.messages) == 6  # every forged sender still got its one ack
        # An agent's reply goes to the requester and the watchers within the cap: 11.
        sink.clear()
        act(app, 1, lambda s, t: actions.reply(s, t, AGENT, "No es un caso de soporte."))
        deliver(app)
        [reply] = sink.messages
        assert len(reply.rcpt_tos) == 11
        metrics = generate_latest(app.health.registry).decode()
        assert 'buzon_notify_refusals_total{reason="watcher_cap"} 540.0' in metrics
        assert 'buzon_notify_refusals_total{reason="stranger"}' in metrics
    finally:
        app.engine.dispose()
