"""The SMTP/LMTP listener on aiosmtpd: the protocol with its limits, and the server's
lifecycle (bind, TLS, 421 at shutdown, a graceful drain of open transactions).

Protocol limits (size, recipients, messages and errors per connection, idle timeout)
live here; aiosmtpd enforces line length and the declared SIZE. On SIGTERM the listener
answers 421 to new connections and to idle sessions and lets transactions in progress
finish within `smtp.shutdown_grace`; the ingest worker then processes what was stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from daemon.config import ConfigError, SmtpConfig, split_hostport
from daemon.intake.smtp_handler import (
    REPLY_SHUTTING_DOWN,
    REPLY_TOO_MANY_ERRORS,
    TRANSLATED_REPLIES,
    IntakeHandler,
    Store,
    clean,
    peer_ip,
)

log = logging.getLogger("buzon.intake")


# --- the protocol: aiosmtpd's SMTP/LMTP plus limits and shutdown ---------------------------


class _IntakeProtocol(SMTP):
    """One connection. Counts messages and errors, translates replies, says goodbye."""

    def __init__(self, handler: IntakeHandler, listener: SmtpListener, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.listener = listener
        self.messages = 0
        self.errors = 0
        self.auth_user: str | None = None

    def draining(self) -> bool:
        return self.listener.draining

    @property
    def in_transaction(self) -> bool:
        """Between MAIL FROM and the answer to DATA (aiosmtpd resets the envelope then)."""
        return self.envelope is not None and bool(self.envelope.mail_from)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.listener.sessions_open.add(self)
        if self.listener.on_session is not None:
            self.listener.on_session()

    def connection_lost(self, error: Exception | None) -> None:
        super().connection_lost(error)
        self.listener.forget(self)

    async def push(self, status: str | bytes) -> None:
        text = status.decode("utf-8", "replace") if isinstance(status, bytes) else status
        text = TRANSLATED_REPLIES.get(text, text)
        await super().push(text)
        if text.startswith("421"):
            self.close_transport()  # RFC 5321 4.2.2: 421 closes the channel
        elif text.startswith("5"):
            self.errors += 1
            if self.errors >= self.listener.config.max_errors_per_connection:
                await super().push(REPLY_TOO_MANY_ERRORS)
                self.close_transport()
        elif self.listener.draining and not self.in_transaction and not text.startswith("221"):
            # Shutting down: this session's transaction just ended; it may not start another.
            await super().push(REPLY_SHUTTING_DOWN)
            self.close_transport()

    def goodbye(self, reply: str) -> None:
        """Tell the client we close, then close (used on idle sessions during shutdown)."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(reply.encode("ascii") + b"\r\n")  # type: ignore[attr-defined]
            self.close_transport()

    def close_transport(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _IntakeSMTP(_IntakeProtocol):
    pass


class _IntakeLMTP(_IntakeProtocol, LMTP):
    pass


class _ShuttingDown(asyncio.Protocol):
    """What a connection arriving during shutdown gets: 421 and the door."""

    def __init__(self, hostname: str) -> None:
        self.line = f"{REPLY_SHUTTING_DOWN[:3]} {hostname} {REPLY_SHUTTING_DOWN[4:]}\r\n"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self.line.encode("ascii"))  # type: ignore[attr-defined]
        transport.close()


# --- the listener: one runner of `buzon smtp` / `buzon run` --------------------------------


class SmtpListener:
    def __init__(
        self,
        config: SmtpConfig,
        *,
        is_ours: Callable[[str], bool],
        store: Store,
        bind: tuple[str, int] | None = None,
        on_accept: Callable[[], None] | None = None,
        on_session: Callable[[], None] | None = None,
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.config = config
        self.bind = bind or split_hostport(config.listen)
        self.hostname = config.hostname or socket.getfqdn()
        self.tls_context = _tls_context(config)
        self.handler = IntakeHandler(
            config,
            is_ours=is_ours,
            store=store,
            hostname=self.hostname,
            on_accept=on_accept,
        )
        self.sessions_open: set[_IntakeProtocol] = set()
        self.on_session = on_session  # metrics: a connection opened
        self.draining = False
        self.serving = False  # from start until every session is closed
        self.address: tuple[str, int] | None = None  # where it listens, once started
        self._on_close = on_close
        self._server: asyncio.Server | None = None
        self._all_closed: asyncio.Event | None = None

    async def start(self) -> tuple[str, int]:
        """Bind and serve; returns the bound address (port 0 picks a free port)."""
        if self._server is None:
            # aiosmtpd logs every command line at INFO, AUTH arguments included.
            logging.getLogger("mail.log").setLevel(logging.WARNING)
            loop = asyncio.get_running_loop()
            self._server = await loop.create_server(self._factory, *self.bind)
            self.serving = True
            host, port = self._server.sockets[0].getsockname()[:2]
            self.address = (host, port)
            log.info(
                "%s listening on %s:%s tls=%s auth=%s",
                "lmtp" if self.config.lmtp else "smtp", host, port,
                "yes" if self.tls_context else "no", "yes" if self.config.auth_users else "no",
            )  # fmt: skip
        assert self.address is not None
        return self.address

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop`, then close gracefully (the worker drains what was stored)."""
        await self.start()
        try:
            await stop.wait()
        finally:
            try:
                await self._close_gracefully()
                if self._on_close is not None:
                    await self._on_close()
            finally:
                self.serving = False

    def ready(self) -> tuple[bool, str]:
        """Ready once bound and until it starts draining."""
        if self.draining:
            return False, "draining"
        if self.address is None:
            return False, "not listening yet"
        return True, ""

    def forget(self, proto: _IntakeProtocol) -> None:
        self.sessions_open.discard(proto)
        if self._all_closed is not None and not self.sessions_open:
            self._all_closed.set()

    def _factory(self) -> asyncio.BaseProtocol:
        if self.draining:
            return _ShuttingDown(self.hostname)
        cfg = self.config
        cls = _IntakeLMTP if cfg.lmtp else _IntakeSMTP
        return cls(
            self.handler,
            self,
            data_size_limit=cfg.max_message_size,
            enable_SMTPUTF8=True,
            hostname=self.hostname,
            ident="LMTP buzon" if cfg.lmtp else "ESMTP buzon",
            tls_context=self.tls_context,
            require_starttls=cfg.require_tls,
            timeout=cfg.idle_timeout,
            auth_required=cfg.auth_required,
            auth_require_tls=True,  # AUTH on a plain connection: 538, never a password in clear
            authenticator=self._authenticate,
        )

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user = data.login.decode("utf-8", "replace")
        expected = self.config.auth_users.get(user)
        ok = expected is not None and hmac.compare_digest(expected.encode(), data.password)
        log.info(
            "auth %s user=%s client=%s", "ok" if ok else "refused", clean(user), peer_ip(session)
        )
        if ok and isinstance(server, _IntakeProtocol):
            server.auth_user = user
        return AuthResult(success=ok, handled=False)

    async def _close_gracefully(self) -> None:
        """421 to new and idle sessions; transactions in progress get the grace to end."""
        self.draining = True
        self._all_closed = asyncio.Event()
        busy = [p for p in self.sessions_open if p.in_transaction]
        for proto in list(self.sessions_open):
            if not proto.in_transaction:
                proto.goodbye(REPLY_SHUTTING_DOWN)
        if not self.sessions_open:
            self._all_closed.set()
        log.info("stopping: %d transaction(s) in progress may finish", len(busy))
        try:
            await asyncio.wait_for(self._all_closed.wait(), self.config.shutdown_grace)
        except TimeoutError:
            log.warning(
                "grace over: closing %d session(s) mid-transaction", len(self.sessions_open)
            )
            for proto in list(self.sessions_open):
                proto.goodbye(REPLY_SHUTTING_DOWN)
            # Give the closes a moment to run their callbacks before the loop ends.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_closed.wait(), 1.0)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        log.info("listener closed")


def _tls_context(config: SmtpConfig) -> ssl.SSLContext | None:
    if config.tls_cert is None or config.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"smtp.tls_cert/tls_key: cannot load: {exc}") from None
    return context
