"""SMTP and LMTP intake on aiosmtpd: durable acceptance, then the ingest worker.

The handler is thin (STYLE C1 #5): RCPT decides whether an address is ours, DATA commits
the exact bytes with their envelope and only then answers 250 (`451 4.3.0` when the store
cannot commit). Parsing and ticketing happen afterwards in the ingest worker, which the
listener wakes after each accept. The store call runs on a thread pool of its own, so the
event loop keeps serving other sessions while one commits.

Protocol limits (size, recipients, messages and errors per connection, idle timeout) live
here; aiosmtpd enforces line length and the declared SIZE. On SIGTERM the listener answers
421 to new connections and to idle sessions, lets transactions in progress finish within
`smtp.shutdown_grace`, then processes what it accepted before returning.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import format_datetime, localtime
from typing import Any

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from sqlalchemy import Engine, event
from sqlalchemy.exc import OperationalError

from daemon.app import App
from daemon.config import ConfigError, SmtpConfig, split_hostport
from daemon.ingest_worker import IngestWorker
from tickets.db import make_engine, make_session_factory
from tickets.ingest import StoreUnavailable, accept_many

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
_TRANSLATED = {
    "552 Error: Too much mail data": REPLY_TOO_BIG,
    "552 Error: message size exceeds fixed maximum message size": REPLY_TOO_BIG,
}

Store = Callable[[bytes, dict[str, Any]], Awaitable[int]]


# --- the store: accept() off the event loop, with a bounded wait ---------------------------


class WriteGate:
    """Turns at SQLite's write lock between the intake and the rest of the process.

    SQLite has one write lock and no queue for it: a waiting writer polls on a sleeping busy
    handler (its naps grow to 100 ms) and keeps losing to a writer that starts again at
    once, as the ingest worker does between messages — measured, intake fell to the
    worker's pace (~30 messages/s). Installed on the app's engine, the gate makes each of its
    transactions first wait for the intake batches announced before it began (at most
    `max_wait`), so the two alternate: no side starves the other.
    """

    def __init__(self, max_wait: float = 2.0) -> None:
        self.max_wait = max_wait
        self._cond = threading.Condition()
        self._announced = 0
        self._finished = 0
        self._engine: Engine | None = None

    @contextlib.contextmanager
    def intake_turn(self) -> Iterator[None]:
        with self._cond:
            self._announced += 1
        try:
            yield
        finally:
            with self._cond:
                self._finished += 1
                self._cond.notify_all()

    def install(self, engine: Engine) -> None:
        # At checkout, before make_engine's "begin" hook takes the lock with BEGIN
        # IMMEDIATE: a connection waiting here holds nothing (the pool rolled it back).
        event.listen(engine, "checkout", self._before_checkout)
        self._engine = engine

    def uninstall(self) -> None:
        if self._engine is not None:
            event.remove(self._engine, "checkout", self._before_checkout)
            self._engine = None

    def _before_checkout(self, *_args: Any) -> None:
        with self._cond:
            target = self._announced
            self._cond.wait_for(lambda: self._finished >= target, timeout=self.max_wait)


class IntakeStore:
    """Durable acceptance with group commit, off the event loop.

    Each DATA waits in a queue; a writer takes everything waiting (up to `MAX_BATCH`
    messages or `MAX_BATCH_BYTES`) and commits it in one transaction on a thread of its
    own, then answers each session. Under load, concurrent sessions share one commit —
    on SQLite one turn at the single write lock, which the ingest worker holds for tens of
    milliseconds at a time; alone, a message is written at once, never waiting for a batch
    to fill. A failed commit fails the whole batch: every message in it is answered 451
    and none was written.

    The intake has its own engine so that its waits are bounded by `store_timeout`: a sender
    should hear 451 soon, while the workers may wait out a long lock. SQLite gets one writer
    (more would only queue on its sleeping busy handler); PostgreSQL gets a few.
    """

    MAX_BATCH = 64
    MAX_BATCH_BYTES = 16 * 1024 * 1024

    def __init__(
        self, url: str, source: str, timeout: float, gate: WriteGate | None = None
    ) -> None:
        self.engine = make_engine(url)
        self.gate = gate
        _bound_waits(self.engine, timeout)
        self.sessions = make_session_factory(self.engine)
        self.source = source
        self._writers = 1 if self.engine.dialect.name == "sqlite" else 4
        self._executor = ThreadPoolExecutor(self._writers, thread_name_prefix="buzon-intake")
        self._queue: deque[_Waiting] = deque()
        self._running = 0  # writers working the queue
        self._tasks: set[asyncio.Task[None]] = set()

    async def __call__(self, raw: bytes, envelope: dict[str, Any]) -> int:
        """Store one message; returns its row id once committed, or raises StoreUnavailable."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.append(_Waiting(raw, envelope, future))
        if self._running < self._writers:
            self._running += 1
            task = asyncio.create_task(self._write())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    async def aclose(self) -> None:
        """Finish the commits in progress (their senders may yet hear 250), then let go."""
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.to_thread(self._executor.shutdown, wait=True)
        if self.gate is not None:
            self.gate.uninstall()
        self.engine.dispose()

    async def _write(self) -> None:
        try:
            while batch := self._take():
                await self._write_batch(batch)
        finally:
            # Counted down in the same step that found the queue empty: a message queued
            # after this starts a writer of its own, none can be left waiting.
            self._running -= 1

    async def _write_batch(self, batch: list[_Waiting]) -> None:
        loop = asyncio.get_running_loop()
        items = [(w.raw, w.envelope) for w in batch]
        try:
            ids = await loop.run_in_executor(self._executor, self._commit, items)
        except Exception as exc:  # any failure of the commit means "not accepted"
            reason = str(exc) if isinstance(exc, StoreUnavailable) else _describe(exc)
            for waiting in batch:
                if not waiting.future.done():
                    waiting.future.set_exception(StoreUnavailable(reason))
            return
        for waiting, raw_id in zip(batch, ids, strict=True):
            if not waiting.future.done():
                waiting.future.set_result(raw_id)

    def _take(self) -> list[_Waiting]:
        batch: list[_Waiting] = []
        size = 0
        while self._queue and len(batch) < self.MAX_BATCH:
            if batch and size + len(self._queue[0].raw) > self.MAX_BATCH_BYTES:
                break
            waiting = self._queue.popleft()
            if waiting.future.cancelled():
                continue  # the client left before we wrote it: not stored, it will retry
            batch.append(waiting)
            size += len(waiting.raw)
        return batch

    def _commit(self, items: list[tuple[bytes, dict[str, Any]]]) -> list[int]:
        turn = self.gate.intake_turn() if self.gate else contextlib.nullcontext()
        with turn:
            return accept_many(self.sessions, items, self.source)


@dataclass(frozen=True)
class _Waiting:
    raw: bytes
    envelope: dict[str, Any]
    future: asyncio.Future[int]


def _describe(exc: BaseException) -> str:
    first = (str(exc).splitlines() or [""])[0][:200]
    return f"{type(exc).__name__}: {first}"


def _bound_waits(engine: Engine, seconds: float) -> None:
    millis = int(seconds * 1000)
    if engine.dialect.name == "sqlite":

        def on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Runs after make_engine's pragmas, so it replaces their 30 s busy timeout.
            cursor = dbapi_conn.cursor()
            cursor.execute(f"PRAGMA busy_timeout={millis}")
            cursor.close()

    else:

        def on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Outside a transaction, or a rollback would undo the SETs.
            autocommit = dbapi_conn.autocommit
            dbapi_conn.autocommit = True
            with dbapi_conn.cursor() as cursor:
                cursor.execute(f"SET lock_timeout = {millis}")
                cursor.execute(f"SET statement_timeout = {millis}")
            dbapi_conn.autocommit = autocommit

    event.listen(engine, "connect", on_connect)


# --- what the handler records ---------------------------------------------------------------


def _clean(text: str, limit: int = 255) -> str:
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
    lines = [f"Received: from {_clean(helo) or 'unknown'} ([{client_ip}])"]
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
        self, server: _IntakeProtocol, session: Session, envelope: Envelope, hostname: str,
        responses: list[str],
    ) -> list[str]:  # fmt: skip
        session.host_name = hostname  # aiosmtpd leaves this to a handler that has the hook
        if not self.config.auth_users:
            responses = [r for r in responses if not r[4:].startswith("AUTH")]
        # aiosmtpd reads commands from a buffered stream, one at a time (RFC 2920 safe).
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_MAIL(
        self, server: _IntakeProtocol, session: Session, envelope: Envelope, address: str,
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
        self, server: _IntakeProtocol, session: Session, envelope: Envelope, address: str,
        rcpt_options: list[str],
    ) -> str:  # fmt: skip
        if not self.is_ours(address):
            log.info("refused rcpt=%s client=%s: not ours", _clean(address), peer_ip(session))
            return REPLY_NOT_OURS
        if len(envelope.rcpt_tos) >= self.config.max_recipients:
            return REPLY_TOO_MANY_RCPTS
        envelope.rcpt_tos.append(address)  # a hook that answers must record it itself
        envelope.rcpt_options.extend(rcpt_options)
        return REPLY_RCPT_OK

    async def handle_DATA(
        self, server: _IntakeProtocol, session: Session, envelope: Envelope
    ) -> str:
        server.messages += 1
        queue_id = secrets.token_hex(6)
        raw = self._trace(server, session, envelope, queue_id) + (envelope.original_content or b"")
        meta = self._envelope(server, session, envelope, queue_id)
        try:
            raw_id = await self.store(raw, meta)
        except StoreUnavailable as exc:
            log.error("store unavailable, answered 451 client=%s: %s", meta["client"], exc)
            status = REPLY_STORE_DOWN
        else:
            log.info(
                "accepted raw=%s queue_id=%s from=%s rcpts=%d size=%d client=%s tls=%s",
                raw_id, queue_id, _clean(meta["mail_from"]), len(meta["rcpt_tos"]), len(raw),
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
        log.error("session error: %s", _describe(error))
        return REPLY_INTERNAL

    def _trace(
        self, server: _IntakeProtocol, session: Session, envelope: Envelope, queue_id: str
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
        self, server: _IntakeProtocol, session: Session, envelope: Envelope, queue_id: str
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
        text = _TRANSLATED.get(text, text)
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


# --- the listener: one component of `buzon smtp` / `buzon run` ------------------------------


class SmtpListener:
    def __init__(
        self,
        config: SmtpConfig,
        *,
        is_ours: Callable[[str], bool],
        store: Store,
        worker: IngestWorker | None = None,
        bind: tuple[str, int] | None = None,
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.config = config
        self.bind = bind or split_hostport(config.listen)
        self.hostname = config.hostname or socket.getfqdn()
        self.worker = worker
        self.tls_context = _tls_context(config)
        self.handler = IntakeHandler(
            config,
            is_ours=is_ours,
            store=store,
            hostname=self.hostname,
            on_accept=worker.wake.set if worker is not None else None,
        )
        self.sessions_open: set[_IntakeProtocol] = set()
        self.on_session: Callable[[], None] | None = None  # metrics hook: a connection opened
        self.draining = False
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
        """Serve until `stop`, close gracefully, then process what was accepted."""
        await self.start()
        try:
            await stop.wait()
        finally:
            await self._close_gracefully()
            if self._on_close is not None:
                await self._on_close()
        await self._process_backlog()

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
            "auth %s user=%s client=%s", "ok" if ok else "refused", _clean(user), peer_ip(session)
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

    async def _process_backlog(self) -> None:
        """Process what was accepted before exiting, within the grace; the rest waits in the
        store for the next start (claim_pending picks it up)."""
        if self.worker is None:
            return
        deadline = time.monotonic() + max(self.config.shutdown_grace, 1.0)
        total = 0
        try:
            while time.monotonic() < deadline:
                handled = await asyncio.to_thread(self.worker.run_once)
                total += handled
                if not handled:
                    break
        except OperationalError as exc:
            log.error("database unavailable at shutdown: %s", str(exc).splitlines()[0])
        log.info("processed %d message(s) at shutdown", total)


def _tls_context(config: SmtpConfig) -> ssl.SSLContext | None:
    if config.tls_cert is None or config.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"smtp.tls_cert/tls_key: cannot load: {exc}") from None
    return context


# --- wiring -------------------------------------------------------------------------------


def listener_for(
    app: App,
    worker: IngestWorker | None,
    config: SmtpConfig | None = None,
    *,
    bind: tuple[str, int] | None = None,
) -> SmtpListener:
    """The listener of `buzon smtp` and `buzon run`: the configured store, our addresses,
    and the worker to wake after each accept (and to drain at shutdown)."""
    config = config or app.settings.smtp
    gate = None
    if app.settings.db_url.startswith("sqlite"):
        gate = WriteGate()
        gate.install(app.engine)  # the worker's (and every other) transaction of this process
    source = "lmtp" if config.lmtp else "smtp"
    store = IntakeStore(app.settings.db_url, source, config.store_timeout, gate)
    try:
        return SmtpListener(
            config,
            is_ours=app.settings.is_own_address,
            store=store,
            worker=worker,
            bind=bind,
            on_close=store.aclose,
        )
    except ConfigError:
        if gate is not None:
            gate.uninstall()
        store.engine.dispose()
        raise
