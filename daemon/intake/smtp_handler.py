"""The SMTP/LMTP handler: decisions at the right SMTP step (aiosmtpd hooks).

RCPT decides whether an address is ours; DATA commits the exact bytes with their
envelope and only then answers 250 (`451 4.3.0` when the store cannot commit). Parsing
and ticketing happen afterwards in the ingest worker. The handler knows the connection
only through the small `Connection` protocol, not the server class.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from email.utils import format_datetime, localtime
from typing import Any, Protocol

from aiosmtpd.smtp import Envelope, Session

from daemon.config import SmtpConfig
from tickets.errors import describe
from tickets.inbox import StoreUnavailable

log = logging.getLogger("buzon.intake")

# --- replies (RFC 5321 codes with RFC 3463 enhanced status codes) -------------------------

REPLY_SENDER_OK = "250 2.1.0 Sender OK"
REPLY_RCPT_OK = "250 2.1.5 Recipient OK"
REPLY_STORED = "250 2.0.0 Stored as {queue_id}"
REPLY_NOT_OURS = "550 5.1.1 Mailbox unavailable: only the support addresses receive mail here"
REPLY_TOO_MANY_RCPTS = "452 4.5.3 Too many recipients"
REPLY_TOO_BIG = "552 5.3.4 Message too big"
REPLY_STORE_DOWN = "451 4.3.0 Mail store unavailable, try again later"
REPLY_INTERNAL = "451 4.3.0 Internal error, try again later"
REPLY_TOO_MANY_MESSAGES = "421 4.7.0 Too many messages in one connection, reconnect"
REPLY_TOO_MANY_ERRORS = "421 4.7.0 Too many errors, closing connection"
REPLY_SHUTTING_DOWN = "421 4.3.2 Service shutting down, try again later"

# aiosmtpd's own replies for an oversize mail carry no enhanced status code; they are
# translated at the one place every reply passes (`_IntakeProtocol.push`).
TRANSLATED_REPLIES = {
    "552 Error: Too much mail data": REPLY_TOO_BIG,
    "552 Error: message size exceeds fixed maximum message size": REPLY_TOO_BIG,
}

Store = Callable[[bytearray, dict[str, Any]], Awaitable[int]]


class Connection(Protocol):
    """What the handler needs of one SMTP/LMTP connection."""

    messages: int
    auth_user: str | None

    def draining(self) -> bool: ...


# --- what the handler records ---------------------------------------------------------------


def clean(text: str, limit: int = 255) -> str:
    """Client-supplied text for a header or a log line: printable ASCII only, no comments."""
    return "".join(c if 0x21 <= ord(c) <= 0x7E and c not in "()\\" else "?" for c in text)[:limit]


def _unescape(text: str) -> str:
    # aiosmtpd decodes arguments as UTF-8 with surrogateescape; the store wants valid text.
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def tls_description(session: Session) -> str | None:
    """'TLSv1.3 TLS_AES_256_GCM_SHA384' when the session went through STARTTLS."""
    cipher = (session.ssl or {}).get("cipher")
    return f"{cipher[1]} {cipher[0]}" if cipher else None


def protocol_name(lmtp: bool, extended: bool, utf8: bool, tls: bool, auth: bool) -> str:
    """The `with` keyword of Received (RFC 3848, RFC 6531): ESMTPS, UTF8LMTPA, …"""
    name = "LMTP" if lmtp else ("ESMTP" if extended else "SMTP")
    if utf8:
        name = "UTF8" + name.removeprefix("E")
    return name + ("S" if tls else "") + ("A" if auth else "")


def received_header(
    *,
    helo: str,
    client_ip: str,
    hostname: str,
    protocol: str,
    queue_id: str,
    tls: str | None,
    recipient: str | None,
) -> bytes:
    """The trace header we prepend to the stored bytes (RFC 5321 4.4), folded with CRLF."""
    lines = [f"Received: from {clean(helo) or 'unknown'} ([{client_ip}])"]
    lines.append(f"\tby {hostname} (buzon) with {protocol} id {queue_id}")
    if tls:
        version, _, cipher = tls.partition(" ")
        lines.append(f"\t(using {version} with cipher {cipher})")
    # Only for one recipient: naming several would tell each about the others (Bcc).
    last = f"for <{recipient}>; " if recipient and recipient.isascii() else ""
    lines.append(f"\t{last}{format_datetime(localtime())}")
    return ("\r\n".join(lines) + "\r\n").encode("ascii", "replace")


def peer_ip(session: Session) -> str:
    peer = session.peer
    return str(peer[0]) if isinstance(peer, tuple) else str(peer or "unknown")


# --- the handler: decisions at the right SMTP step -----------------------------------------


class IntakeHandler:
    def __init__(
        self,
        config: SmtpConfig,
        *,
        is_ours: Callable[[str], bool],
        store: Store,
        hostname: str,
        on_accept: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.is_ours = is_ours
        self.store = store
        self.hostname = hostname
        self.on_accept = on_accept

    async def handle_EHLO(
        self, server: Connection, session: Session, envelope: Envelope, hostname: str,
        responses: list[str],
    ) -> list[str]:  # fmt: skip
        session.host_name = hostname  # aiosmtpd leaves this to a handler that has the hook
        if not self.config.auth_users:
            responses = [r for r in responses if not r[4:].startswith("AUTH")]
        # aiosmtpd reads commands from a buffered stream, one at a time (RFC 2920 safe).
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_MAIL(
        self, server: Connection, session: Session, envelope: Envelope, address: str,
        mail_options: list[str],
    ) -> str:  # fmt: skip
        if server.draining():
            return REPLY_SHUTTING_DOWN
        if server.messages >= self.config.max_messages_per_connection:
            return REPLY_TOO_MANY_MESSAGES
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return REPLY_SENDER_OK

    async def handle_RCPT(
        self, server: Connection, session: Session, envelope: Envelope, address: str,
        rcpt_options: list[str],
    ) -> str:  # fmt: skip
        if not self.is_ours(address):
            log.info("refused rcpt=%s client=%s: not ours", clean(address), peer_ip(session))
            return REPLY_NOT_OURS
        if len(envelope.rcpt_tos) >= self.config.max_recipients:
            return REPLY_TOO_MANY_RCPTS
        envelope.rcpt_tos.append(address)  # a hook that answers must record it itself
        envelope.rcpt_options.extend(rcpt_options)
        return REPLY_RCPT_OK

    async def handle_DATA(self, server: Connection, session: Session, envelope: Envelope) -> str:
        server.messages += 1
        queue_id = secrets.token_hex(6)
        raw = envelope.original_content
        assert isinstance(raw, bytearray)  # as _IntakeProtocol.smtp_DATA reads it
        raw[:0] = self._trace(server, session, envelope, queue_id)  # in place: no copy
        meta = self._envelope(server, session, envelope, queue_id)
        try:
            raw_id = await self.store(raw, meta)
        except StoreUnavailable as exc:
            log.error("store unavailable, answered 451 client=%s: %s", meta["client"], exc)
            status = REPLY_STORE_DOWN
        else:
            log.info(
                "accepted raw=%s queue_id=%s from=%s rcpts=%d size=%d client=%s tls=%s",
                raw_id, queue_id, clean(meta["mail_from"]), len(meta["rcpt_tos"]), len(raw),
                meta["client"], meta["tls"] or "no",
            )  # fmt: skip
            if self.on_accept is not None:
                self.on_accept()
            status = REPLY_STORED.format(queue_id=queue_id)
        if self.config.lmtp:
            # RFC 2033: one reply per accepted recipient; they share one stored message.
            return "\r\n".join([status] * len(envelope.rcpt_tos))
        return status

    async def handle_exception(self, error: Exception) -> str:
        log.error("session error: %s", describe(error))
        return REPLY_INTERNAL

    def _trace(
        self, server: Connection, session: Session, envelope: Envelope, queue_id: str
    ) -> bytes:
        return received_header(
            helo=session.host_name or "",
            client_ip=peer_ip(session),
            hostname=self.hostname,
            protocol=protocol_name(
                self.config.lmtp,
                session.extended_smtp,
                envelope.smtp_utf8,
                session.ssl is not None,
                bool(session.authenticated),
            ),
            queue_id=queue_id,
            tls=tls_description(session),
            recipient=envelope.rcpt_tos[0] if len(envelope.rcpt_tos) == 1 else None,
        )

    def _envelope(
        self, server: Connection, session: Session, envelope: Envelope, queue_id: str
    ) -> dict[str, Any]:
        mail_from = _unescape(envelope.mail_from or "")
        return {
            "mail_from": "" if mail_from == "<>" else mail_from,  # the null sender of DSNs
            "rcpt_tos": [_unescape(r) for r in envelope.rcpt_tos],
            "mail_options": envelope.mail_options,
            "client": peer_ip(session),
            "helo": _unescape(session.host_name or ""),
            "tls": tls_description(session),
            "auth_user": server.auth_user,
            "protocol": "lmtp" if self.config.lmtp else "smtp",
            "queue_id": queue_id,
        }
