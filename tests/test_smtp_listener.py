"""The SMTP/LMTP listener driven by real clients (smtplib, swaks, a raw socket) on loopback:
acceptance rules, protocol limits, 8-bit and SMTPUTF8 mail, STARTTLS, AUTH and LMTP."""

from __future__ import annotations

import base64
import shutil
import smtplib
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from sqlalchemy import select
from sqlalchemy.orm import undefer

from daemon.intake.smtp_handler import protocol_name, received_header
from daemon.wiring import App
from tests.fixtures.smtp_listener import SmtpServer, serve_smtp
from tests.helpers import make_app
from tests.mailbuilder import mail as build_mail
from tickets.models import RawMessage, Ticket

SUPPORT = "soporte@soporte.example"
ANA = "ana@clinica.example"


def stored(app: App) -> list[RawMessage]:
    with app.sessions() as session:
        query = select(RawMessage).options(undefer(RawMessage.raw)).order_by(RawMessage.id)
        return list(session.scalars(query))


def tickets(app: App) -> list[Ticket]:
    with app.sessions() as session:
        return list(session.scalars(select(Ticket).order_by(Ticket.id)))


def crlf(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def mail(*args: Any, **kwargs: Any) -> bytes:
    """A realistic mail with CRLF line ends, as an MTA sends it (smtplib sends bytes as
    they are), so that the stored bytes can be compared with what was sent."""
    return crlf(build_mail(*args, **kwargs))


def body_of(row: RawMessage) -> bytes:
    """The stored bytes without the Received header we prepended."""
    assert row.raw.startswith(b"Received: from ")
    end = row.raw.index(b"\r\n", row.raw.index(b"\r\n\t") + 2)
    while row.raw[end + 2 : end + 3] == b"\t":
        end = row.raw.index(b"\r\n", end + 2)
    return row.raw[end + 2 :]


def swaks(server: SmtpServer, *args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("swaks") is None:
        pytest.fail("swaks is missing: deploy/bootstrap.sh installs it")
    cmd = ["swaks", "--server", f"{server.host}:{server.port}", "--timeout", "10", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)


# --- acceptance ---------------------------------------------------------------------------


def test_several_messages_in_one_connection_each_stored_exactly(smtp_server: SmtpServer) -> None:
    raws = [mail(f"Ana <{ANA}>", f"Consulta {n}", f"Texto {n}") for n in range(3)]
    with smtp_server.client() as client:
        for raw in raws:
            assert client.sendmail(ANA, [SUPPORT], raw) == {}
    smtp_server.wait_processed()

    rows = stored(smtp_server.app)
    assert [body_of(r) for r in rows] == raws
    assert all(r.source == "smtp" and r.state == "processed" for r in rows)
    assert rows[0].envelope["mail_from"] == ANA
    assert rows[0].envelope["rcpt_tos"] == [SUPPORT]
    assert [t.subject for t in tickets(smtp_server.app)] == [f"Consulta {n}" for n in range(3)]


def test_lines_that_begin_with_a_dot_are_stored_as_sent(smtp_server: SmtpServer) -> None:
    # smtplib dot-stuffs them (RFC 5321 4.5.2); the listener must undo exactly that.
    text = ".primera línea\n..dos puntos\n.\nfin . y .. dentro\n."
    raw = mail(f"Ana <{ANA}>", "Puntos", text)
    with smtp_server.client() as client:
        assert client.sendmail(ANA, [SUPPORT], raw) == {}
    smtp_server.wait_processed()
    assert [body_of(r) for r in stored(smtp_server.app)] == [raw]


def test_received_header_and_envelope_name_the_client(smtp_server: SmtpServer) -> None:
    with smtp_server.client() as client:
        client.ehlo("mx.clinica.example")
        client.sendmail(ANA, [SUPPORT], mail(ANA, "Hola", "Texto"))
    row = stored(smtp_server.app)[0]
    header = row.raw.split(b"\r\n\r\n")[0].decode()
    assert header.startswith("Received: from mx.clinica.example ([127.0.0.1])\r\n\tby ")
    assert f" with ESMTP id {row.envelope['queue_id']}\r\n" in header
    assert f"\tfor <{SUPPORT}>; " in header
    env = row.envelope
    assert (env["client"], env["helo"], env["tls"], env["protocol"]) == (
        "127.0.0.1",
        "mx.clinica.example",
        None,
        "smtp",
    )


def test_received_header_is_built_from_clean_parts() -> None:
    header = received_header(
        helo="evil\r\nX-Injected: yes (comment)",
        client_ip="192.0.2.7",
        hostname="mx.buzon.example",
        protocol=protocol_name(False, True, True, True, True),
        queue_id="abc",
        tls="TLSv1.3 TLS_AES_256_GCM_SHA384",
        recipient=None,
    )
    lines = header.decode().split("\r\n")
    assert lines[0] == "Received: from evil??X-Injected:?yes??comment? ([192.0.2.7])"
    assert lines[1] == "\tby mx.buzon.example (buzon) with UTF8SMTPSA id abc"
    assert lines[2] == "\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)"
    assert all(line.startswith("\t") for line in lines[1:-1]) and lines[-1] == ""
    assert protocol_name(True, True, False, False, False) == "LMTP"
    assert protocol_name(False, False, False, False, False) == "SMTP"


def test_plus_addresses_and_support_domains_are_ours(tmp_path: Path) -> None:
    app = make_app(
        tmp_path,
        f"sqlite:///{tmp_path / 'b.db'}",
        support_addresses=[SUPPORT],
        support_domains=["ayuda.example"],
    )
    with serve_smtp(app, process=False) as server, server.client() as client:
        rcpts = ["soporte+123.abc@soporte.example", "cualquiera@ayuda.example"]
        assert client.sendmail(ANA, rcpts, mail(ANA, "Hola", "x")) == {}
    assert stored(app)[0].envelope["rcpt_tos"] == rcpts
    app.engine.dispose()


def test_null_sender_is_accepted_for_bounces(smtp_server: SmtpServer) -> None:
    with smtp_server.client() as client:
        client.ehlo()
        assert client.mail("<>")[0] == 250
        assert client.rcpt(SUPPORT)[0] == 250
        assert client.data(mail("MAILER-DAEMON@mx.example", "Undelivered", "x"))[0] == 250
    assert stored(smtp_server.app)[0].envelope["mail_from"] == ""


def test_pipelined_commands_are_answered_in_order(smtp_server: SmtpServer) -> None:
    raw = mail(ANA, "En bloque", "Texto")
    with socket.create_connection((smtp_server.host, smtp_server.port), timeout=10) as sock:
        replies = sock.makefile("rb")
        assert replies.readline().startswith(b"220 ")
        sock.sendall(b"EHLO cliente.example\r\n")
        ehlo = _read_reply(replies)
        assert b"250-PIPELINING" in ehlo
        sock.sendall(
            f"MAIL FROM:<{ANA}>\r\nRCPT TO:<x@evil.example>\r\nRCPT TO:<{SUPPORT}>\r\n"
            "DATA\r\n".encode()
        )
        codes = [_read_reply(replies)[:3] for _ in range(4)]
        assert codes == [b"250", b"550", b"250", b"354"]
        sock.sendall(raw + b".\r\nQUIT\r\n")
        assert _read_reply(replies).startswith(b"250 2.0.0 Stored as ")
        assert _read_reply(replies).startswith(b"221")
    assert body_of(stored(smtp_server.app)[0]) == raw


def _read_reply(stream: socket.SocketIO | object) -> bytes:
    """One (possibly multi-line) SMTP reply."""
    lines = []
    while True:
        line = stream.readline()  # type: ignore[attr-defined]
        lines.append(line)
        if len(line) < 4 or line[3:4] != b"-":
            return b"".join(lines)


def test_swaks_with_pipelining(smtp_server: SmtpServer) -> None:
    result = swaks(smtp_server, "--pipeline", "--from", ANA, "--to", SUPPORT, "--body", "Hola")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "250 2.0.0 Stored as" in result.stdout
    smtp_server.wait_processed()
    assert len(tickets(smtp_server.app)) == 1


def test_8bit_and_smtputf8_mail_keep_their_bytes(smtp_server: SmtpServer) -> None:
    eight_bit = crlf(
        f"From: Ana <{ANA}>\nTo: {SUPPORT}\nSubject: Cita\nMessage-ID: <8bit@clinica.example>\n"
        "MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n"
        "Content-Transfer-Encoding: 8bit\n\nNo puedo agendar la cita del niño, ¿qué?\n".encode()
    )
    sender = "josé@clínica.example"
    utf8 = crlf(
        f"From: José <{sender}>\nTo: {SUPPORT}\nSubject: Facturación\n"
        "Message-ID: <utf8@clinica.example>\nMIME-Version: 1.0\n"
        "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n"
        "La factura llegó mal.\n".encode()
    )
    with smtp_server.client() as client:
        client.ehlo()
        assert client.has_extn("8bitmime") and client.has_extn("smtputf8")
        client.sendmail(ANA, [SUPPORT], eight_bit, mail_options=["BODY=8BITMIME"])
        client.sendmail(sender, [SUPPORT], utf8, mail_options=["BODY=8BITMIME", "SMTPUTF8"])
    smtp_server.wait_processed()

    first, second = stored(smtp_server.app)
    assert body_of(first) == eight_bit and body_of(second) == utf8
    assert second.envelope["mail_from"] == sender
    assert b"with UTF8SMTP id" in second.raw and b"with ESMTP id" in first.raw
    assert [t.subject for t in tickets(smtp_server.app)] == ["Cita", "Facturación"]


# --- refusals and limits ------------------------------------------------------------------


def test_relay_attempt_is_refused(smtp_server: SmtpServer) -> None:
    with smtp_server.client() as client, pytest.raises(smtplib.SMTPRecipientsRefused) as err:
        client.sendmail(ANA, ["victima@otro.example"], mail(ANA, "Relay", "x"))
    code, message = err.value.recipients["victima@otro.example"]
    assert code == 550 and message.startswith(b"5.1.1 ")

    result = swaks(smtp_server, "--from", ANA, "--to", "soporte@soporte.example.evil.com")
    assert result.returncode != 0
    assert "<** 550 5.1.1 " in result.stdout
    assert stored(smtp_server.app) == []


def test_oversize_mail_is_refused_declared_or_not(sqlite_app: App) -> None:
    big = mail(ANA, "Adjunto", "x" * 5000)
    with serve_smtp(sqlite_app, max_message_size=2048) as server, server.client() as client:
        client.ehlo()
        assert client.esmtp_features["size"] == "2048"
        with pytest.raises(smtplib.SMTPSenderRefused) as declared:  # smtplib sends SIZE=
            client.sendmail(ANA, [SUPPORT], big)
        assert declared.value.smtp_code == 552 and declared.value.smtp_error.startswith(b"5.3.4")
        client.mail(ANA)  # no SIZE: found out while reading DATA
        client.rcpt(SUPPORT)
        assert client.data(big) == (552, b"5.3.4 Message too big")
    assert stored(sqlite_app) == []


def test_too_many_recipients(sqlite_app: App) -> None:
    rcpts = [f"soporte+{n}@soporte.example" for n in range(4)]
    with serve_smtp(sqlite_app, max_recipients=2) as server, server.client() as client:
        refused = client.sendmail(ANA, rcpts, mail(ANA, "Varios", "x"))
    assert set(refused) == set(rcpts[2:])
    assert all(code == 452 and msg.startswith(b"4.5.3") for code, msg in refused.values())
    assert stored(sqlite_app)[0].envelope["rcpt_tos"] == rcpts[:2]


def test_messages_per_connection_are_limited(sqlite_app: App) -> None:
    with serve_smtp(sqlite_app, max_messages_per_connection=2) as server:
        client = server.client()
        for n in range(2):
            client.sendmail(ANA, [SUPPORT], mail(ANA, f"M{n}", "x"))
        with pytest.raises(smtplib.SMTPSenderRefused) as err:
            client.sendmail(ANA, [SUPPORT], mail(ANA, "M2", "x"))
        assert err.value.smtp_code == 421
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.noop()
        client.close()
    assert len(stored(sqlite_app)) == 2


def test_errors_per_connection_are_limited(sqlite_app: App) -> None:
    with serve_smtp(sqlite_app, max_errors_per_connection=3) as server:
        client = server.client()
        client.ehlo()
        client.mail(ANA)
        assert [client.rcpt(f"x{n}@evil.example")[0] for n in range(2)] == [550, 550]
        assert client.rcpt("x3@evil.example")[0] == 550
        assert client.getreply()[0] == 421  # said after the third error, then closed
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.noop()
        client.close()


def test_overlong_line_is_refused(smtp_server: SmtpServer) -> None:
    raw = mail(ANA, "Largo", "x") + b"y" * 2000 + b"\n"
    with smtp_server.client() as client:
        client.ehlo()
        client.mail(ANA)
        client.rcpt(SUPPORT)
        code, _ = client.data(raw)
    assert code == 500
    assert stored(smtp_server.app) == []


# --- STARTTLS and AUTH --------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_files(ca: trustme.CA, tmp_path: Path) -> dict[str, Path]:
    cert = ca.issue_cert("localhost", "127.0.0.1")
    paths = {"tls_cert": tmp_path / "cert.pem", "tls_key": tmp_path / "key.pem"}
    cert.cert_chain_pems[0].write_to_path(paths["tls_cert"])
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(paths["tls_cert"], append=True)
    cert.private_key_pem.write_to_path(paths["tls_key"])
    return paths


@pytest.fixture
def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture
def tls_server(
    sqlite_app: App, tls_files: dict[str, Path]
) -> Iterator[SmtpServer]:  # fmt: skip
    users = {"agente": "s3cr3t-clave"}
    with serve_smtp(sqlite_app, auth_users=users, **tls_files) as server:
        yield server


def test_starttls_with_a_trusted_certificate(
    tls_server: SmtpServer, client_tls: ssl.SSLContext
) -> None:
    with tls_server.client() as client:
        client.ehlo("mx.clinica.example")
        assert client.has_extn("starttls")
        client.starttls(context=client_tls)
        client.ehlo("mx.clinica.example")
        client.sendmail(ANA, [SUPPORT], mail(ANA, "Cifrado", "x"))
    row = stored(tls_server.app)[0]
    assert row.envelope["tls"].startswith("TLSv1.")
    assert b" with ESMTPS id " in row.raw and b"\t(using TLSv1." in row.raw


def test_swaks_starttls(tls_server: SmtpServer, ca: trustme.CA, tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(ca_file)
    result = swaks(
        tls_server, "--tls", "--tls-verify", "--tls-ca-path", str(ca_file),
        "--tls-sni", "localhost", "--from", ANA, "--to", SUPPORT,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert stored(tls_server.app)[0].envelope["tls"].startswith("TLSv1.")


def test_auth_is_refused_on_a_plain_connection(
    tls_server: SmtpServer, client_tls: ssl.SSLContext
) -> None:
    token = base64.b64encode(b"\0agente\0s3cr3t-clave").decode()
    with tls_server.client() as client:
        client.ehlo()
        assert not client.has_extn("auth")  # never offered in clear
        code, message = client.docmd("AUTH", f"PLAIN {token}")
        assert code == 538 and message.startswith(b"5.7.11")

        client.starttls(context=client_tls)
        client.ehlo()
        assert "PLAIN" in client.esmtp_features["auth"]
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login("agente", "wrong")
        assert client.login("agente", "s3cr3t-clave")[0] == 235
        client.sendmail(ANA, [SUPPORT], mail(ANA, "Autenticado", "x"))
    row = stored(tls_server.app)[0]
    assert row.envelope["auth_user"] == "agente" and b" with ESMTPSA id " in row.raw


def test_auth_required_refuses_anonymous_mail(
    sqlite_app: App, tls_files: dict[str, Path], client_tls: ssl.SSLContext
) -> None:
    users = {"agente": "s3cr3t-clave"}
    config = {"auth_users": users, "auth_required": True, **tls_files}
    with serve_smtp(sqlite_app, **config) as server, server.client() as client:
        client.starttls(context=client_tls)
        client.ehlo()
        with pytest.raises(smtplib.SMTPSenderRefused) as err:
            client.sendmail(ANA, [SUPPORT], mail(ANA, "Anónimo", "x"))
        assert err.value.smtp_code == 530


# --- LMTP ---------------------------------------------------------------------------------


@pytest.fixture
def lmtp_server(sqlite_app: App) -> Iterator[SmtpServer]:
    with serve_smtp(sqlite_app, lmtp=True) as server:
        yield server


def test_lmtp_answers_once_per_accepted_recipient(lmtp_server: SmtpServer) -> None:
    with lmtp_server.client() as client:
        assert client.helo()[0] == 500  # LMTP greets with LHLO only
        assert client.ehlo("mta.soporte.example")[0] == 250  # smtplib.LMTP sends LHLO
        assert client.mail(ANA)[0] == 250
        assert client.rcpt(SUPPORT)[0] == 250
        assert client.rcpt("x@evil.example")[0] == 550
        assert client.rcpt("soporte+ventas@soporte.example")[0] == 250
        first = client.data(mail(ANA, "Dos destinatarios", "x"))
        second = client.getreply()
    assert first[0] == second[0] == 250
    rows = stored(lmtp_server.app)
    assert len(rows) == 1 and rows[0].source == "lmtp"
    assert rows[0].envelope["rcpt_tos"] == [SUPPORT, "soporte+ventas@soporte.example"]
    assert b" with LMTP id " in rows[0].raw


def test_swaks_lmtp_with_one_recipient_refused(lmtp_server: SmtpServer) -> None:
    result = swaks(
        lmtp_server, "--protocol", "LMTP", "--from", ANA,
        "--to", f"{SUPPORT},intruso@evil.example",
    )  # fmt: skip
    assert "<** 550 5.1.1 " in result.stdout  # RCPT for the foreign address
    assert result.stdout.count("<-  250 2.0.0 Stored as") == 1  # DATA: one accepted rcpt
    lmtp_server.wait_processed()
    assert len(stored(lmtp_server.app)) == 1 and len(tickets(lmtp_server.app)) == 1


def test_many_refused_lmtp_recipients_do_not_defer_the_support_recipient(
    lmtp_server: SmtpServer,
) -> None:
    """Postfix hands one message for twelve recipients of our domain, one of them ours:
    eleven 550s must not close the session (the error limit is for SMTP clients)."""
    with lmtp_server.client() as client:
        assert client.ehlo("mta.soporte.example")[0] == 250
        assert client.mail(ANA)[0] == 250
        for n in range(11):
            assert client.rcpt(f"nadie{n}@soporte-otro.example")[0] == 550
        assert client.rcpt(SUPPORT)[0] == 250
        assert client.data(mail(ANA, "Muchos destinatarios", "x"))[0] == 250
    lmtp_server.wait_processed()
    assert len(stored(lmtp_server.app)) == 1
