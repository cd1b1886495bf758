"""Issue 18, mail that was silently not sent: bouncing marks expire, clear when the
address writes in or takes a mail, can be listed and cleared; a reply that reaches nobody
fails loudly; SMTPUTF8 toward a relay that offers it; a Maildir left without tmp/new/cur."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope, Session

from daemon.config import load_settings
from daemon.wiring import App
from notifier import outbox
from notifier.transports import MaildirTransport, SmtpTransport
from tests.helpers import free_port
from tests.mailbuilder import mail
from tickets.addresses import clear_bouncing, mark_bouncing
from tickets.models import MailAddress, OutboxMessage, utcnow

BUZON = [sys.executable, "-m", "daemon"]


class _Sink:
    """An aiosmtpd relay whose SMTPUTF8 offer the test chooses."""

    def __init__(self) -> None:
        self.received: list[tuple[str, list[str], bytes]] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        with self.lock:
            self.received.append(
                (str(envelope.mail_from), list(envelope.rcpt_tos), bytes(envelope.content or b""))
            )
        return "250 2.0.0 queued"


@pytest.fixture(params=[True, False], ids=["smtputf8", "ascii-only"])
def utf8_relay(request: pytest.FixtureRequest) -> Iterator[tuple[_Sink, int, bool]]:
    sink = _Sink()
    port = free_port()
    controller = Controller(
        sink, hostname="127.0.0.1", port=port, enable_SMTPUTF8=bool(request.param)
    )
    controller.start()
    try:
        yield sink, port, bool(request.param)
    finally:
        controller.stop()


def test_smtputf8_is_used_when_offered_and_a_clear_refusal_otherwise(
    utf8_relay: tuple[_Sink, int, bool],
) -> None:
    sink, port, offered = utf8_relay
    transport = SmtpTransport("127.0.0.1", port, security="none")
    raw = "Subject: hola\r\nTo: josé@clínica.example\r\n\r\nhola\r\n".encode()
    try:
        result = transport.send(
            "soporte@soporte.example", ["josé@clínica.example", "ana@clinica.example"], raw
        )
    finally:
        transport.close()
    if offered:
        assert result.unsupported == {} and result.permanent == {}
        assert sink.received[0][1] == ["josé@clínica.example", "ana@clinica.example"]
    else:
        assert list(result.unsupported) == ["josé@clínica.example"]
        assert "SMTPUTF8" in result.unsupported["josé@clínica.example"]
        assert sink.received[0][1] == ["ana@clinica.example"]  # the others still get it


def test_a_maildir_without_tmp_new_cur_is_repaired(tmp_path: Path) -> None:
    folder = tmp_path / "outbox-maildir"
    folder.mkdir()  # what an older `buzon doctor` left behind
    transport = MaildirTransport(folder)
    transport.check()
    transport.send("soporte@localhost", ["ana@clinica.example"], b"Subject: x\r\n\r\nhola\r\n")
    assert len(list((folder / "new").iterdir())) == 1


def test_doctor_leaves_a_complete_outbox_maildir(tmp_path: Path) -> None:
    (tmp_path / "buzon-data" / "outbox-maildir").mkdir(parents=True)
    subprocess.run([*BUZON, "doctor"], cwd=tmp_path, capture_output=True, timeout=60)
    for sub in ("tmp", "new", "cur"):
        assert (tmp_path / "buzon-data" / "outbox-maildir" / sub).is_dir()


# --- bouncing marks --------------------------------------------------------------------------


def _app(tmp_path: Path, **outbound: object) -> tuple[App, Path]:
    config = tmp_path / "buzon.toml"
    lines = [
        f'data_dir = "{tmp_path / "data"}"',
        'secret_key = "test-secret-0123456789"',
        'support_addresses = ["soporte@soporte.example"]',
        "[outbound]",
        *(f"{k} = {v!r}".replace("'", '"') for k, v in outbound.items()),
    ]
    config.write_text("\n".join(lines) + "\n")
    app = App(load_settings(config))
    app.prepare()
    return app, config


def buzon(
    args: list[str], config: Path, stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUZON_")}
    return subprocess.run(
        [*BUZON, *args, "--config", str(config)],
        input=stdin.decode() if stdin else None,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def _is_bouncing(app: App, email: str) -> bool:
    with app.sessions() as session:
        row = session.get(MailAddress, email)
        return bool(row and row.bouncing)


def test_marks_are_listed_cleared_by_command_and_expire(tmp_path: Path) -> None:
    app, config = _app(tmp_path, bouncing_days=10)
    with app.sessions.begin() as session:
        mark_bouncing(session, "ana@clinica.example", "550 5.1.1 no such user")
        mark_bouncing(session, "luis@clinica.example", "550 5.2.2 mailbox full")
    listed = buzon(["addresses", "list", "--bouncing"], config)
    assert listed.returncode == 0, listed.stderr
    assert "ana@clinica.example" in listed.stdout and "5.1.1" in listed.stdout
    cleared = buzon(["addresses", "clear", "ana@clinica.example"], config)
    assert cleared.returncode == 0 and "mark cleared" in cleared.stdout
    assert not _is_bouncing(app, "ana@clinica.example")
    assert "ana@clinica.example" not in buzon(["addresses", "list", "--bouncing"], config).stdout
    # Ten days later the delivery pass lifts luis's mark.
    assert _is_bouncing(app, "luis@clinica.example")
    app.deliver_counts(utcnow() + timedelta(days=9))
    assert _is_bouncing(app, "luis@clinica.example")
    app.deliver_counts(utcnow() + timedelta(days=11))
    assert not _is_bouncing(app, "luis@clinica.example")


def test_a_mark_clears_when_the_address_writes_in(tmp_path: Path) -> None:
    """What ingest calls for a person's mail (tickets.addresses.clear_bouncing)."""
    app, _ = _app(tmp_path)
    with app.sessions.begin() as session:
        mark_bouncing(session, "ana@clinica.example", "550 5.1.1")
    with app.sessions.begin() as session:
        assert clear_bouncing(session, ["Ana@Clinica.example"]) == ["ana@clinica.example"]
        assert clear_bouncing(session, ["ana@clinica.example"]) == []
    assert not _is_bouncing(app, "ana@clinica.example")


def test_a_successful_delivery_clears_the_mark(tmp_path: Path) -> None:
    app, _ = _app(tmp_path)
    with app.sessions.begin() as session:
        message = EmailMessage()
        message["Subject"] = "x"
        message.set_content("hola")
        outbox.enqueue(
            session,
            message,
            message_id="m1@soporte.example",
            kind="reply",
            mail_from="soporte@soporte.example",
            recipients=["ana@clinica.example"],
            ticket_id=None,
            article_id=None,
            automatic=False,
            now=utcnow(),
        )
        # marked after the mail was queued (a bounce of an earlier mail)
        mark_bouncing(session, "ana@clinica.example", "550 5.2.2 mailbox full")
    counts = app.deliver_counts(utcnow())  # the local Maildir takes it
    assert counts["sent"] == 1
    assert not _is_bouncing(app, "ana@clinica.example")
    with app.sessions() as session:
        assert session.query(OutboxMessage).one().state == "sent"


def test_a_reply_that_reaches_nobody_exits_non_zero_with_one_clear_line(tmp_path: Path) -> None:
    app, config = _app(tmp_path)
    raw = mail("Ana <ana@clinica.example>", "No carga", "Hola.")
    assert buzon(["ingest"], config, raw).returncode == 0
    with app.sessions.begin() as session:
        mark_bouncing(session, "ana@clinica.example", "550 5.1.1 no such user")
    answer = tmp_path / "respuesta.txt"
    answer.write_text("Hola Ana, ya quedó.\n")
    done = buzon(["tickets", "reply", "1", "--file", str(answer), "--as", "maria"], config)
    assert done.returncode == 69, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1
    assert "mailed to nobody" in done.stderr and "ana@clinica.example (bouncing)" in done.stderr
    assert "buzon addresses clear" in done.stderr
    # Cleared: the next reply goes out, exit 0.
    assert buzon(["addresses", "clear", "ana@clinica.example"], config).returncode == 0
    again = buzon(["tickets", "reply", "1", "--file", str(answer), "--as", "maria"], config)
    assert again.returncode == 0, again.stderr
    assert "reply mail queued for 1" in again.stdout
