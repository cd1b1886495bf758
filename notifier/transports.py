"""Where outbound mail goes: an SMTP relay (STARTTLS or implicit TLS, AUTH) or, when no
relay is configured, a local Maildir. A transport reports per recipient; connection-level
trouble is a TransientDeliveryError, a message the relay will never take a
PermanentDeliveryError.
"""

from __future__ import annotations

import mailbox
import re
import smtplib
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from notifier.errors import PermanentDeliveryError, TransientDeliveryError

# Enhanced status codes (RFC 3463) that blame the address or the mailbox, not the message.
_ADDRESS_PROBLEM = re.compile(r"\b5\.[12]\.\d{1,3}\b")


@dataclass
class SendResult:
    """Recipients the relay refused; everyone else has the mail."""

    temporary: dict[str, str] = field(default_factory=dict)  # 4xx: try them again later
    permanent: dict[str, str] = field(default_factory=dict)  # 5xx: they bounce
    # Never tried: the relay cannot carry their address (no SMTPUTF8). Not the address's
    # fault, so not a bounce; the mail fails for them with the reason on the ticket.
    unsupported: dict[str, str] = field(default_factory=dict)


def needs_smtputf8(address: str) -> bool:
    """An address SMTP can only carry with the SMTPUTF8 extension (RFC 6531)."""
    return not address.isascii()


NO_SMTPUTF8 = "553 5.6.7 the relay does not offer SMTPUTF8, needed for a non-ASCII address"


class Transport(Protocol):
    def send(self, mail_from: str, recipients: list[str], raw: bytes) -> SendResult: ...

    def check(self) -> None:
        """Reach the destination as delivery would, sending nothing (`buzon doctor`);
        raises what the attempt raised."""

    def close(self) -> None: ...


def _reply(code: int, message: bytes | str) -> str:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
    return f"{code} {' '.join(text.split())}"[:300]


class SmtpTransport:
    """One connection per delivery pass, reopened when the relay dropped it."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        security: Literal["starttls", "tls", "none"] = "starttls",
        user: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
        ca_file: Path | None = None,
    ) -> None:
        self.host, self.port, self.security = host, port, security
        self.user, self.password, self.timeout = user, password, timeout
        self.ca_file = ca_file
        self._conn: smtplib.SMTP | None = None

    def _context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)

    def open(self) -> smtplib.SMTP:
        """Connect, EHLO, STARTTLS and AUTH as configured; the smtplib error on failure
        (`buzon doctor` reports it as it is; delivery classifies it)."""
        conn: smtplib.SMTP | None = None
        try:
            if self.security == "tls":
                conn = smtplib.SMTP_SSL(
                    self.host, self.port, timeout=self.timeout, context=self._context()
                )
            else:
                conn = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            conn.ehlo()
            if self.security == "starttls":
                # Never fall back to plain text when the relay does not offer STARTTLS.
                conn.starttls(context=self._context())
                conn.ehlo()
            if self.user is not None:
                conn.login(self.user, self.password or "")
            return conn
        except BaseException:
            _quit(conn)
            raise

    def _connect(self) -> smtplib.SMTP:
        try:
            return self.open()
        except smtplib.SMTPAuthenticationError as exc:
            # Our credentials, not the mail: keep the mail and retry once ops fixed it.
            raise TransientDeliveryError(
                f"relay refused our login: {_reply(exc.smtp_code, exc.smtp_error)}"
            ) from None
        except (OSError, smtplib.SMTPException) as exc:
            raise TransientDeliveryError(
                f"relay {self.host}:{self.port} unavailable: {type(exc).__name__}: {exc}"[:300]
            ) from None

    def send(self, mail_from: str, recipients: list[str], raw: bytes) -> SendResult:
        reused = self._conn is not None
        try:
            return self._send_once(mail_from, recipients, raw)
        except smtplib.SMTPServerDisconnected:
            self.close()
            if not reused:
                raise TransientDeliveryError("relay closed the connection") from None
        # A connection kept from an earlier mail may have timed out at the relay: once more.
        try:
            return self._send_once(mail_from, recipients, raw)
        except smtplib.SMTPServerDisconnected:
            self.close()
            raise TransientDeliveryError("relay closed the connection") from None

    def _send_once(self, mail_from: str, recipients: list[str], raw: bytes) -> SendResult:
        if self._conn is None:
            self._conn = self._connect()
        result = SendResult()
        options, result.unsupported = _utf8_plan(self._conn, mail_from, recipients)
        recipients = [r for r in recipients if r not in result.unsupported]
        if not recipients:
            return result
        try:
            refused = self._conn.sendmail(mail_from, recipients, raw, mail_options=options)
        except smtplib.SMTPRecipientsRefused as exc:
            refused = exc.recipients
        except smtplib.SMTPDataError as exc:
            reply = _reply(exc.smtp_code, exc.smtp_error)
            if exc.smtp_code >= 500:
                blame = tuple(recipients) if _ADDRESS_PROBLEM.search(reply) else ()
                raise PermanentDeliveryError(
                    f"relay rejected the message: {reply}", blame
                ) from None
            raise TransientDeliveryError(f"relay deferred the message: {reply}") from None
        except smtplib.SMTPSenderRefused as exc:
            # Our envelope sender is refused: a configuration matter, not the recipients'.
            raise TransientDeliveryError(
                f"relay refused our sender: {_reply(exc.smtp_code, exc.smtp_error)}"
            ) from None
        except smtplib.SMTPServerDisconnected:
            raise
        except (OSError, smtplib.SMTPException) as exc:
            self.close()
            raise TransientDeliveryError(
                f"sending failed: {type(exc).__name__}: {exc}"[:300]
            ) from None
        for rcpt, (code, message) in refused.items():
            target = result.permanent if code >= 500 else result.temporary
            target[rcpt] = _reply(code, message)
        return result

    def check(self) -> None:
        _quit(self.open())

    def close(self) -> None:
        conn, self._conn = self._conn, None
        _quit(conn)


def _utf8_plan(
    conn: smtplib.SMTP, mail_from: str, recipients: list[str]
) -> tuple[list[str], dict[str, str]]:
    """MAIL FROM options, and the recipients this relay cannot carry: SMTPUTF8 when an
    address needs it and the relay offers it (smtplib then speaks UTF-8 on MAIL and
    RCPT); without it, a non-ASCII recipient is refused here with a clear reason and
    the others still get the mail."""
    if not needs_smtputf8(mail_from) and not any(needs_smtputf8(r) for r in recipients):
        return [], {}
    if conn.has_extn("smtputf8"):
        return ["SMTPUTF8"], {}
    if needs_smtputf8(mail_from):
        raise PermanentDeliveryError(f"our sender {mail_from!r}: {NO_SMTPUTF8}")
    return [], {r: NO_SMTPUTF8 for r in recipients if needs_smtputf8(r)}


def _quit(conn: smtplib.SMTP | None) -> None:
    if conn is None:
        return
    try:
        conn.quit()
    except (OSError, smtplib.SMTPException):
        conn.close()


class MaildirTransport:
    """No relay configured: each mail becomes a file in a Maildir that ops can read."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def send(self, mail_from: str, recipients: list[str], raw: bytes) -> SendResult:
        # The envelope would otherwise be lost (watchers are not all in To/Cc headers).
        envelope = (
            f"Return-Path: <{mail_from}>\nX-Buzon-Envelope-To: {', '.join(recipients)}\n"
        ).encode("ascii", "replace")
        # Maildir files hold the platform's line endings (LF), as MDAs write them; the
        # outbox keeps the CRLF wire form for SMTP. Bodies are quoted-printable or base64,
        # so no bare CR is part of the content.
        content = envelope + raw.replace(b"\r\n", b"\n")
        try:
            self._maildir().add(content)
        except OSError as exc:
            raise TransientDeliveryError(f"cannot write to {self.path}: {exc}") from None
        return SendResult()

    def _maildir(self) -> mailbox.Maildir:
        """The Maildir, with tmp/ new/ cur/ made where they are missing: `Maildir(create=
        True)` makes them only for a new folder, and an empty folder left by an older
        version or by hand would fail every delivery."""
        for sub in ("tmp", "new", "cur"):
            (self.path / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        return mailbox.Maildir(self.path, create=False)

    def check(self) -> None:
        try:
            self._maildir()
        except OSError as exc:
            raise TransientDeliveryError(f"cannot write to {self.path}: {exc}") from None

    def close(self) -> None:
        return None
