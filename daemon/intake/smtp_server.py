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
import re
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session, syntax

from daemon.config import ConfigError, SmtpConfig, split_hostport
from daemon.intake.smtp_handler import (
    REPLY_NOT_OURS,
    REPLY_SHUTTING_DOWN,
    REPLY_TOO_MANY_ERRORS,
    TRANSLATED_REPLIES,
    IntakeHandler,
    Store,
    clean,
    peer_ip,
)

log = logging.getLogger("buzon.intake")

REPLY_IDLE = "421 4.4.2 Idle too long, closing connection"
REPLY_DATA_TOO_SLOW = "421 4.4.2 DATA took too long, closing connection"
REPLY_TOO_MANY_SESSIONS = "421 4.7.0 Too many connections, try again later"
REPLY_TOO_MANY_FROM_IP = "421 4.7.0 Too many connections from your address, try again later"
# aiosmtpd's wording; the size reply is translated (TRANSLATED_REPLIES) when pushed.
REPLY_LINE_TOO_LONG = "500 Line too long (see RFC5321 4.5.3.1.6)"
REPLY_DATA_TOO_MUCH = "552 Error: Too much mail data"

# The path nearly every client sends: <local@domain> in dot-atoms, then any parameters
# after spaces (which aiosmtpd's parser drops, as it drops any whitespace or comment).
_PLAIN_PATH = re.compile(
    r"<([A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>(?: +([^ \t(].*))?$"
)

# aiosmtpd's WARNING lines that repeat what a client sent (an unknown command, a bad AUTH
# or PROXY line): a client could fill the log at will. They go to DEBUG.
_CLIENT_ECHOES = (
    "%r unrecognised: %s",
    "%r over limit for %s",
    "%r too many bogus commands",
    "%r aborted AUTH with '*'",
    "%r invalid PROXY handshake",
)


class _DemoteClientEchoes(logging.Filter):
    """Turns aiosmtpd's client-echoing warnings into DEBUG records (shown only when
    buzón logs at DEBUG); its other warnings (configuration) stay as they are."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING or record.msg not in _CLIENT_ECHOES:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger("buzon").isEnabledFor(logging.DEBUG)


_DEMOTE = _DemoteClientEchoes()


# --- the protocol: aiosmtpd's SMTP/LMTP plus limits and shutdown ---------------------------


class _IntakeProtocol(SMTP):
    """One connection. Counts messages and errors, translates replies, says goodbye.

    Timing: aiosmtpd re-arms its `timeout` only when a command is recognised, so inside
    DATA it was a deadline for the whole message (a client sending a line a second was cut
    after `idle_timeout`). Here every byte read re-arms it — a true idle timeout — and
    `data_timeout` bounds one DATA in all. While the store works (our turn, bounded by
    store_timeout) no timer runs.
    """

    def __init__(self, handler: IntakeHandler, listener: SmtpListener, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.listener = listener
        self.messages = 0
        self.errors = 0
        self.auth_user: str | None = None
        self.client_ip = "unknown"
        self._refused = False  # over a session cap: never became a session
        self._reading_data = False  # between DATA and the end of the message
        self._data_bytes = 0
        self._data_deadline: asyncio.TimerHandle | None = None
        self.large_slot = False  # holds one of the listener's large-DATA slots
        self.waiting_slot = False  # paused until a large-DATA slot frees
        self._held: list[bytes] = []  # what arrived after the pause (one chunk or two)

    def draining(self) -> bool:
        return self.listener.draining

    @property
    def in_transaction(self) -> bool:
        """Between MAIL FROM and the answer to DATA (aiosmtpd resets the envelope then)."""
        return self.envelope is not None and bool(self.envelope.mail_from)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """The address of MAIL FROM / RCPT TO and what follows it. aiosmtpd parses it with
        the email package's header parser (~17 µs, twice a mail: a sixth of the listener's
        event-loop samples in a burst); a plain path is read by one regex instead, and anything else
        still goes to aiosmtpd's parser, so every answer is the one it would give."""
        plain = _PLAIN_PATH.match(arg)
        if plain is None:
            return super()._getaddr(arg)
        address = plain[1]
        if self.local_part_limit and address.index("@") > self.local_part_limit:
            return None, None
        return address, plain[2] or ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self.client_ip = str(peer[0]) if isinstance(peer, tuple) else str(peer or "unknown")
        refusal = self.listener.admit(self.client_ip)
        if refusal is not None:
            self._refused = True
            transport.write(f"{refusal}\r\n".encode("ascii"))  # type: ignore[attr-defined]
            transport.close()
            return
        super().connection_made(transport)
        self.listener.sessions_open.add(self)
        if self.listener.on_session is not None:
            self.listener.on_session()

    def connection_lost(self, error: Exception | None) -> None:
        if self._refused:
            return
        self._end_data()
        super().connection_lost(error)
        self.listener.forget(self)

    def eof_received(self) -> bool | None:
        if self._refused:
            return False
        return super().eof_received()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        self._reset_timeout()  # idle means "no byte read", not "no command completed"
        if self._reading_data:
            self._data_bytes += len(data)
            if not self.large_slot and self._data_bytes > self.listener.config.large_message_size:
                self.listener.large_data(self)
            if self.waiting_slot:
                # Held back from the stream reader, which would otherwise resume reading
                # as soon as it has consumed its buffer (its own flow control).
                self._held.append(data)
                self._pause()
                return
        super().data_received(data)

    def pause_for_slot(self) -> None:
        """No large-DATA slot is free: stop reading this client until one is (the bytes
        stay in its TCP buffers, not in our memory). The idle timer keeps running: a
        client left waiting that long hears 421 and retries later."""
        self.waiting_slot = True
        self._pause()

    def _pause(self) -> None:
        if self.transport is not None and self.transport.is_reading():  # type: ignore[attr-defined]
            self.transport.pause_reading()  # type: ignore[attr-defined]

    def resume_with_slot(self) -> None:
        self.waiting_slot = False
        self.large_slot = True
        held, self._held = b"".join(self._held), []
        if held:
            super().data_received(held)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()  # type: ignore[attr-defined]
            self._reset_timeout()

    @syntax("DATA")  # HELP lists only methods that carry their syntax
    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd's DATA, reading the message into one growing buffer. aiosmtpd keeps a
        bytearray per line and joins them at the end: a 25 MB mail was held about three
        times over at that moment. The handler prepends its trace header to this buffer
        in place, so the bytes stored are the bytes read, never copied whole."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        self._reading_data = True
        self._data_bytes = 0
        self._data_deadline = self.loop.call_later(
            self.listener.config.data_timeout, self._data_too_slow
        )
        try:
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            content = await self._read_content()
        finally:
            self._end_data()
        if content is None:
            return  # the connection is gone
        if isinstance(content, str):
            await self.push(content)
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            return
        # A bytearray where aiosmtpd's types say bytes: the handler extends it in place.
        self.envelope.content = content  # type: ignore[assignment]
        self.envelope.original_content = content  # type: ignore[assignment]
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push(status)

    async def _read_content(self) -> bytearray | str | None:
        """The message up to the lone dot, dot-stuffing undone (RFC 5321 4.5.2); or the
        reply for a message over the size or line limits, read to its end first (RFC 5321
        4.2.5), as aiosmtpd does; None when the connection went away."""
        content = bytearray()
        limit = self.data_size_limit
        problem: str | None = None
        size = line_size = 0
        while self.transport is not None:
            try:
                line = await self._reader.readuntil(b"\r\n")
            except asyncio.CancelledError:
                self._writer.close()  # the connection was reset during DATA
                raise
            except asyncio.LimitOverrunError as exc:
                # Longer than the stream's limit: read on, answer once the message ends.
                problem = problem or REPLY_LINE_TOO_LONG
                line = await self._reader.read(exc.consumed)
            if line_size == 0 and line == b".\r\n":
                return content if problem is None else problem
            size += len(line)
            line_size += len(line)
            if problem is None and limit and size > limit:
                problem = REPLY_DATA_TOO_MUCH
            elif problem is None and line_size > self.line_length_limit:
                problem = REPLY_LINE_TOO_LONG
            if problem is not None:
                content.clear()  # nothing of it will be stored: let the memory go now
            else:
                content += line[1:] if line.startswith(b".") else line
            if line.endswith(b"\r\n"):
                line_size = 0
        return None

    async def _call_handler_hook(self, command: str, *args: Any) -> Any:
        if command != "DATA":
            return await super()._call_handler_hook(command, *args)
        # The message is in: from here the wait is ours (bounded by store_timeout).
        self._reading_data = False
        self._cancel_data_deadline()
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()
        try:
            return await super()._call_handler_hook(command, *args)
        finally:
            self._reset_timeout()

    def _end_data(self) -> None:
        self._reading_data = False
        self._cancel_data_deadline()
        self.listener.release_large(self)

    def _cancel_data_deadline(self) -> None:
        if self._data_deadline is not None:
            self._data_deadline.cancel()
            self._data_deadline = None

    def _data_too_slow(self) -> None:
        log.info("data_timeout: closing client=%s after %d bytes", self.client_ip,
                 self._data_bytes)  # fmt: skip
        self.goodbye(REPLY_DATA_TOO_SLOW)

    def _timeout_cb(self) -> None:
        # RFC 5321 4.2.2: say why we close rather than vanish.
        log.info("idle_timeout: closing client=%s", self.client_ip)
        self.goodbye(REPLY_IDLE)

    async def push(self, status: str | bytes) -> None:
        text = status.decode("utf-8", "replace") if isinstance(status, bytes) else status
        text = TRANSLATED_REPLIES.get(text, text)
        await super().push(text)
        if text.startswith("421"):
            self.close_transport()  # RFC 5321 4.2.2: 421 closes the channel
        elif text.startswith("5") and not self._trusted_refusal(text):
            self.errors += 1
            if self.errors >= self.listener.config.max_errors_per_connection:
                await super().push(REPLY_TOO_MANY_ERRORS)
                self.close_transport()
        elif self.listener.draining and not self.in_transaction and not text.startswith("221"):
            # Shutting down: this session's transaction just ended; it may not start another.
            await super().push(REPLY_SHUTTING_DOWN)
            self.close_transport()

    def _trusted_refusal(self, reply: str) -> bool:
        """Over LMTP the client is our own MTA: its refused recipients (one 550 per
        recipient that is not ours) are not a client misbehaving, and counting them would
        cut the session, deferring the support recipient of the same message."""
        return self.listener.config.lmtp and reply.startswith(REPLY_NOT_OURS[:9])

    def goodbye(self, reply: str) -> None:
        """Tell the client we close, then close (idle sessions at shutdown, timeouts)."""
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
        self.sessions_per_ip: dict[str, int] = {}
        self.large_holders: set[_IntakeProtocol] = set()
        self.large_waiting: list[_IntakeProtocol] = []  # FIFO
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
            mail_log = logging.getLogger("mail.log")
            mail_log.setLevel(logging.WARNING)
            if _DEMOTE not in mail_log.filters:
                mail_log.addFilter(_DEMOTE)
            loop = asyncio.get_running_loop()
            try:
                self._server = await loop.create_server(self._factory, *self.bind)
            except OSError as exc:  # a busy port is the configuration's problem: exit 78
                raise ConfigError(
                    f"smtp.listen {self.config.listen}: {exc.strerror or exc}"
                ) from None
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

    def admit(self, client_ip: str) -> str | None:
        """None when a new session from `client_ip` may open, else the 421 to answer.
        Counted here so that one client cannot hold every session (or memory) alone."""
        if len(self.sessions_open) >= self.config.max_sessions:
            log.warning("refused client=%s: max_sessions reached", client_ip)
            return REPLY_TOO_MANY_SESSIONS
        if self.sessions_per_ip.get(client_ip, 0) >= self.config.max_sessions_per_ip:
            log.info("refused client=%s: max_sessions_per_ip reached", client_ip)
            return REPLY_TOO_MANY_FROM_IP
        self.sessions_per_ip[client_ip] = self.sessions_per_ip.get(client_ip, 0) + 1
        return None

    def large_data(self, proto: _IntakeProtocol) -> None:
        """`proto`'s DATA passed large_message_size: it gets a slot, or waits for one.
        Slot holders never wait on anything but their own client, so no cycle forms."""
        if proto.waiting_slot:
            return
        if len(self.large_holders) < self.config.max_large_in_flight:
            self.large_holders.add(proto)
            proto.large_slot = True
        else:
            self.large_waiting.append(proto)
            proto.pause_for_slot()

    def release_large(self, proto: _IntakeProtocol) -> None:
        if proto in self.large_waiting:
            self.large_waiting.remove(proto)
            proto.waiting_slot = False
        if proto not in self.large_holders:
            return
        self.large_holders.discard(proto)
        proto.large_slot = False
        while self.large_waiting and len(self.large_holders) < self.config.max_large_in_flight:
            nxt = self.large_waiting.pop(0)
            if nxt.transport is not None and not nxt.transport.is_closing():
                self.large_holders.add(nxt)
                nxt.resume_with_slot()

    def forget(self, proto: _IntakeProtocol) -> None:
        if proto in self.sessions_open:
            left = self.sessions_per_ip.get(proto.client_ip, 1) - 1
            if left > 0:
                self.sessions_per_ip[proto.client_ip] = left
            else:
                self.sessions_per_ip.pop(proto.client_ip, None)
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
