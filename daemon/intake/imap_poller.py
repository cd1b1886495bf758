"""The IMAP poller: one mailbox, worked by UID, exactly once, IDLE when offered.

For every message above the last UID fetched (never UNSEEN: a mail read in Outlook
still counts) it fetches RFC822.SIZE first, then BODY.PEEK[] in batches bounded by
count and bytes, and commits the exact bytes of each fetched batch in one transaction
(`accept_many`). Then either it has the desk process those rows itself (one batch, one
transaction: `ingest.processes = 1`), or it hands them to the ingest worker processes
(`handoff` wakes them) and goes on fetching while they work on other cores; until a
worker runs (they take seconds to start), it processes its batches itself. Only once
a row is in a final state does the message change on the server: marked, moved or
deleted, or set aside when it failed. Handed-over UIDs wait in memory until then; a
reply to mail still in flight is held back until that mail is final (`imap_order`).

`imap_mailboxes.last_uid` is the highest UID at and below which every message is
settled on the server; UIDs above it that were stored but not yet disposed of are
fetched again after a restart, found by their bytes (`stored_before`: neither stored
nor processed twice), and disposed of once their rows are final. A UIDVALIDITY change
refetches the folder the same way. A lease (`imap:<name>`) keeps other instances off
the mailbox.

The IMAP client is blocking, so the poller runs in a thread; `run` adapts it to the
service's asyncio components. The connection comes from a `connect` factory that
wiring builds from the config (tests point it at a private Dovecot).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import imaplib
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from imapclient import IMAPClient, SocketTimeout
from imapclient.exceptions import IMAPClientError, LoginError
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from daemon.config import ImapMailbox
from daemon.intake.imap_auth import Credentials, TokenError
from daemon.intake.imap_order import ConversationOrder
from tickets import leases
from tickets.errors import describe as describe_error
from tickets.inbox import StoreUnavailable, accept_many, record_unfetched, stored_before
from tickets.models import ImapMailboxState, RawMessage, RawState, utcnow

log = logging.getLogger("buzon.imap")

Connect = Callable[[], IMAPClient]

SEEN = b"\\Seen"
FLAGGED = b"\\Flagged"
SIZE_CHUNK = 1000  # UIDs whose sizes are asked at once: bounds that response too
FAILED_STATES = (RawState.FAILED, RawState.QUARANTINED)
_UNPROCESSED = (RawState.PENDING, RawState.PROCESSING)  # stored, not yet turned into tickets
STATE_CHUNK = 500  # row ids whose states are asked at once
# While handed-over mail is open, last_uid is written at most this often: each write
# waits for SQLite's lock behind the workers, and a late one only means a longer refetch.
ADVANCE_SECONDS = 2.0


class LeaseLost(Exception):
    """Another instance holds the mailbox now; stop touching it."""


class MailboxTrouble(Exception):
    """The server reported a problem with the selected folder (e.g. it was deleted and
    recreated under us): reconnect and select it afresh, checking UIDVALIDITY."""


# What a lost server, network or database looks like; anything else is a bug and
# ends the component so that the supervisor restarts the process.
TRANSIENT = (
    OSError,
    imaplib.IMAP4.error,  # IMAPClientError, LoginError and the connection-abort error
    OperationalError,
    StoreUnavailable,
    TokenError,
    MailboxTrouble,
)


@dataclass(frozen=True)
class Backoff:
    min_seconds: float = 1.0
    max_seconds: float = 300.0

    def delay(self, failures: int) -> float:
        """Exponential with jitter, so many instances do not reconnect in step."""
        cap = min(self.max_seconds, self.min_seconds * 2 ** min(max(failures - 1, 0), 30))
        return float(cap / 2 + random.uniform(0, cap / 2))


def connect_factory(mailbox: ImapMailbox) -> Connect:
    """Opens a connection as configured (TLS, STARTTLS or plain); login is the poller's."""

    def connect() -> IMAPClient:
        tls = mailbox.security != "none"
        context = (
            ssl.create_default_context(cafile=mailbox.ca_file and str(mailbox.ca_file))
            if tls
            else None
        )
        timeout = SocketTimeout(connect=min(mailbox.timeout, 30.0), read=mailbox.timeout)
        client = IMAPClient(
            mailbox.host,
            mailbox.port,
            ssl=mailbox.security == "tls",
            ssl_context=context,
            timeout=timeout,
        )
        if mailbox.security == "starttls":
            try:
                client.starttls(context)
            except BaseException:
                client.shutdown()
                raise
        return client

    return connect


def describe(exc: BaseException) -> str:
    """One line for the log: the kind of failure, never a secret (login errors included)."""
    if isinstance(exc, LoginError):
        return "LoginError: the server refused the login"
    return describe_error(exc, 200)


class ImapPoller:
    def __init__(
        self,
        mailbox: ImapMailbox,
        *,
        connect: Connect,
        credentials: Credentials,
        sessions: sessionmaker[Session],
        ingest: Callable[[int], str],
        ingest_batch: Callable[[list[int]], list[str]] | None = None,
        holder: str,
        lease_seconds: float = 60,
        backoff: Backoff | None = None,
        check_interval: float = 0.5,
        on_accept: Callable[[], None] | None = None,
        on_outcome: Callable[[str], None] | None = None,
        handoff: Callable[[], bool] | None = None,
        reader: sessionmaker[Session] | None = None,
    ) -> None:
        self.mailbox = mailbox
        self.connect = connect
        self.credentials = credentials
        self.sessions = sessions
        # For lookups: on SQLite, sessions that do not queue for the write lock behind
        # the workers' transactions (WAL readers never wait for a writer).
        self.reader = reader or sessions
        self.holder = holder
        # Turns a stored row into tickets and returns its state (the desk; the benchmark
        # passes a stand-in to measure the poller's own cost).
        self.ingest = ingest
        self.ingest_batch = ingest_batch  # the same for a fetched batch, in one transaction
        self.lease_name = f"imap:{mailbox.name}"
        self.lease_seconds = lease_seconds
        self.backoff = backoff or Backoff()
        self.check_interval = check_interval  # how soon IDLE notices stop/lease duties
        self.last_uid = 0
        self.uidvalidity: int | None = None
        self.counts: dict[str, int] = {}
        # Metrics hooks: a message stored, and the state each message ended in.
        self.on_accept = on_accept
        self.on_outcome = on_outcome
        # With worker processes: wakes them for the rows just stored (callable from this
        # thread) and says whether one runs yet; None: the poller processes its batches.
        self.handoff = handoff
        # Set (from any thread) when a worker finished rows: handed-over UIDs may be due.
        self.processed = threading.Event()
        self.working = threading.Event()  # set while this poller holds and works the box
        self._failures = 0
        self._outage_since: float | None = None
        self._standing_by = False
        self._lease_renewed = 0.0
        self._folders: set[str] = set()
        self._fetched = 0  # the highest UID stored (or settled) in this session
        self._advanced = 0.0  # when last_uid was last written
        self._waiting: dict[int, int] = {}  # UID → row id: handed over, not yet final
        self._order = ConversationOrder()  # replies held back until their originals are final

    # --- running ----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """The service component: works in a thread until `stop` is set."""
        halt = threading.Event()
        waiter = asyncio.ensure_future(stop.wait())
        waiter.add_done_callback(lambda _: halt.set())
        try:
            await asyncio.to_thread(self.run_blocking, halt)
        finally:
            halt.set()
            waiter.cancel()

    def run_blocking(self, halt: threading.Event) -> None:
        """Hold the lease and work the mailbox; reconnect with backoff after outages."""
        try:
            while not halt.is_set():
                halt.wait(self._one_session(halt))
        finally:
            self.working.clear()
            self._release_lease()

    def _one_session(self, halt: threading.Event) -> float:
        """Work one connection until it ends; return how long to wait before the next."""
        try:
            if not self._take_lease():
                return self.lease_seconds / 3
            self._work(halt)
            return 0.0
        except LeaseLost:
            log.warning("mailbox=%s lease lost to another instance; standing by", self.name)
            return self.lease_seconds / 3
        except TRANSIENT as exc:
            return self._outage(exc)
        finally:
            self.working.clear()

    def _work(self, halt: threading.Event) -> None:
        with self.connect() as client:
            self._folders = set()
            self._login(client)
            self._select(client)
            self.working.set()
            idle = self.mailbox.idle and client.has_capability("IDLE")
            while not halt.is_set():
                self._sync(client, halt)
                self._recovered()
                if self._waiting or self._order.held:
                    self._await_workers(client, halt)
                elif idle:
                    self._idle(client, halt)
                else:
                    self._pause(halt)
            self._dispose_settled(client)  # what the workers finished while we stopped

    @property
    def name(self) -> str:
        return self.mailbox.name

    @property
    def standing_by(self) -> bool:
        """Another instance holds the mailbox's lease: this one is a healthy spare."""
        return self._standing_by

    def ready(self) -> tuple[bool, str]:
        """Ready while connected, or while a healthy spare."""
        if self.working.is_set():
            return True, ""
        if self.standing_by:
            return True, "standing by: another instance holds the mailbox"
        return False, "not connected"

    # --- outages ----------------------------------------------------------------------------

    def _outage(self, exc: BaseException) -> float:
        """One log line when an outage starts (not per retry); the delay before retrying."""
        self._failures += 1
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            log.warning(
                "mailbox=%s unavailable, retrying with backoff: %s", self.name, describe(exc)
            )
        self._record_error(describe(exc))
        return self.backoff.delay(self._failures)

    def _recovered(self) -> None:
        if self._outage_since is not None:
            lasted = time.monotonic() - self._outage_since
            log.info(
                "mailbox=%s available again after %.1fs (%d attempts)",
                self.name,
                lasted,
                self._failures,
            )
        self._outage_since = None
        self._failures = 0

    def _record_error(self, error: str) -> None:
        try:
            with self.sessions.begin() as session:
                self._state(session).last_error = error[:1000]
        except OperationalError:
            pass  # the database may be the thing that is down; the log line stands

    # --- lease ------------------------------------------------------------------------------

    def _take_lease(self) -> bool:
        held = leases.acquire(self.sessions, self.lease_name, self.holder, self.lease_seconds)
        if held:
            self._lease_renewed = time.monotonic()
            if self._standing_by:
                log.info("mailbox=%s lease taken over by %s", self.name, self.holder)
        elif not self._standing_by:
            log.info("mailbox=%s is worked by another instance; standing by", self.name)
        self._standing_by = not held
        return held

    def _keep_lease(self) -> None:
        """Renew once a third of the lease has passed; raise LeaseLost if it went to another."""
        if time.monotonic() - self._lease_renewed < self.lease_seconds / 3:
            return
        if not leases.acquire(self.sessions, self.lease_name, self.holder, self.lease_seconds):
            raise LeaseLost(self.lease_name)
        self._lease_renewed = time.monotonic()

    def _release_lease(self) -> None:
        with contextlib.suppress(OperationalError):  # it lapses by itself after lease_seconds
            leases.release(self.sessions, self.lease_name, self.holder)

    # --- session start ----------------------------------------------------------------------

    def _login(self, client: IMAPClient) -> None:
        try:
            self.credentials.login(client)
        except LoginError:
            self.credentials.invalidate()  # a stale token: fetch a fresh one next time
            raise
        with self.sessions.begin() as session:
            state = self._state(session)
            state.last_success_at = utcnow()
            state.token_refreshed_at = self.credentials.refreshed_at

    def _select(self, client: IMAPClient) -> None:
        info = client.select_folder(self.mailbox.folder)
        uidvalidity = int(info[b"UIDVALIDITY"])
        with self.sessions.begin() as session:
            state = self._state(session)
            if state.uidvalidity != uidvalidity:
                if state.uidvalidity is not None:
                    log.warning(
                        "mailbox=%s UIDVALIDITY changed %s -> %s; resynchronising the folder",
                        self.name,
                        state.uidvalidity,
                        uidvalidity,
                    )
                state.uidvalidity, state.last_uid = uidvalidity, 0
            self.last_uid = state.last_uid
            self.uidvalidity = uidvalidity
        # Above last_uid, stored rows are found again by their bytes: refetched, not stored
        # twice; handed-over UIDs of an earlier session are re-tracked that way.
        self._fetched = self.last_uid
        self._waiting.clear()
        self._order.clear()

    def _state(self, session: Session) -> ImapMailboxState:
        state = session.get(ImapMailboxState, self.name)
        if state is None:
            state = ImapMailboxState(name=self.name, last_uid=0)
            session.add(state)
        return state

    # --- waiting for mail -------------------------------------------------------------------

    def _idle(self, client: IMAPClient, halt: threading.Event) -> None:
        """IDLE until news, the RFC 2177 renewal time, or stop; keeps the lease meanwhile."""
        client.idle()
        problem: Exception | None = None
        deadline = time.monotonic() + self.mailbox.idle_renew_seconds
        while not halt.is_set() and time.monotonic() < deadline:
            started = time.monotonic()
            responses = client.idle_check(timeout=self.check_interval)
            if any(r[0] in (b"NO", b"BAD") for r in responses):
                problem = MailboxTrouble(f"server said {responses[0][-1]!r} during IDLE")
                break
            if any(len(r) > 1 and r[1] == b"EXISTS" for r in responses):
                break
            if not responses and time.monotonic() - started < self.check_interval * 0.9:
                break  # woken without a response: the server hung up; DONE will tell
            try:
                self._keep_lease()
            except LeaseLost as exc:
                problem = exc
                break
        client.idle_done()
        if problem is not None:
            raise problem

    def _await_workers(self, client: IMAPClient, halt: threading.Event) -> None:
        """Handed-over rows are being processed: wait for a worker's word (or a short
        while), then settle on the server what they finished; new mail is searched for
        by the next sync, so neither waits on the other."""
        self.processed.wait(self.check_interval)
        self.processed.clear()  # before the query: a later word wakes the next wait
        if halt.is_set():
            return
        self._keep_lease()
        self._dispose_settled(client)

    def _pause(self, halt: threading.Event) -> None:
        """No IDLE: sleep the poll interval in short steps, keeping the lease."""
        deadline = time.monotonic() + self.mailbox.poll_interval
        while not halt.is_set() and time.monotonic() < deadline:
            halt.wait(min(self.check_interval, max(deadline - time.monotonic(), 0)))
            self._keep_lease()

    # --- fetching ---------------------------------------------------------------------------

    def _sync(self, client: IMAPClient, halt: threading.Event) -> None:
        """Ingest every message above last_uid, oldest first, until none is left."""
        while not halt.is_set():
            # "n:*" always matches the highest UID, even below n: filter it out.
            uids = sorted(
                u for u in client.search(["UID", f"{self._fetched + 1}:*"]) if u > self._fetched
            )
            if not uids:
                return
            for start in range(0, len(uids), SIZE_CHUNK):
                chunk = uids[start : start + SIZE_CHUNK]
                sizes = client.fetch(chunk, ["RFC822.SIZE"])
                for batch in self._batches(chunk, sizes):
                    self._handle_batch(client, batch, sizes)
                    self._dispose_settled(client)
                    self._keep_lease()
                    if halt.is_set():
                        return

    def _batches(self, uids: list[int], sizes: dict[int, Any]) -> Iterator[list[int]]:
        """Consecutive UIDs grouped by count and bytes; an oversize one goes alone."""
        batch: list[int] = []
        batch_bytes = 0
        for uid in uids:
            size = _size(sizes, uid)
            full = len(batch) >= self.mailbox.batch_size
            if batch and (full or batch_bytes + size > self.mailbox.fetch_batch_bytes):
                yield batch
                batch, batch_bytes = [], 0
            batch.append(uid)
            batch_bytes += size
        if batch:
            yield batch

    def _handle_batch(self, client: IMAPClient, uids: list[int], sizes: dict[int, Any]) -> None:
        limit = self.mailbox.max_message_size
        small = [u for u in uids if _size(sizes, u) <= limit]
        fetched = client.fetch(small, ["BODY.PEEK[]"]) if small else {}
        bodies = {uid: data[b"BODY[]"] for uid, data in fetched.items()}
        del fetched
        if self.handoff is not None:
            self._order.hold_replies(bodies, {u: _size(sizes, u) for u in bodies})
        rows = self._store(bodies)
        if self._handing_over(rows):
            self._hand_over(rows)
        else:
            self._process_here(rows)
            self._order.settled(list(rows))
        done: list[int] = []
        failed: list[int] = []
        for uid in uids:
            state: str | None
            if uid in self._waiting or uid in self._order.held:
                continue  # disposed of once a worker has finished it
            if uid in rows:
                state = rows[uid][1]
            elif uid in sizes and uid not in small:
                state = self._store_oversize(client, uid, int(sizes[uid][b"RFC822.SIZE"]))
            else:
                continue  # expunged by someone else meanwhile
            if state is not None:
                (failed if state in FAILED_STATES else done).append(uid)
        # Committed above; only now may the server copy change.
        self._after_ingest(client, done)
        self._after_failure(client, failed)
        self._fetched = max(self._fetched, uids[-1])
        self._advance(throttled=self.handoff is not None)

    # --- storing ----------------------------------------------------------------------------

    def _store(self, bodies: dict[int, bytes]) -> dict[int, tuple[int, str]]:
        """Commit the fetched bodies not stored before, all in ONE transaction; returns
        each UID's row id and state (a row stored before keeps its own)."""
        digests = {uid: hashlib.sha256(raw).hexdigest() for uid, raw in bodies.items()}
        known = self._stored_before(list(digests.values()))
        rows: dict[int, tuple[int, str]] = {}
        new = [uid for uid in bodies if digests[uid] not in known]
        if new:
            items = [(bodies[uid], self._envelope(uid)) for uid in new]
            for uid, raw_id in zip(new, accept_many(self.sessions, items, "imap"), strict=True):
                rows[uid] = (raw_id, RawState.PENDING)
                if self.on_accept is not None:
                    self.on_accept()
        rows.update({uid: known[digests[uid]] for uid in bodies if uid not in rows})
        bodies.clear()  # committed: the bytes are not held while processing
        return rows

    def _process_here(self, rows: dict[int, tuple[int, str]]) -> None:
        """Process every row still to do in this thread (as one batch when the desk
        takes batches); `rows` gets their final states."""
        todo = [uid for uid, (_, state) in rows.items() if state in _UNPROCESSED]
        for uid, state in zip(todo, self._process([rows[uid][0] for uid in todo]), strict=True):
            rows[uid] = (rows[uid][0], state)
        for _, state in rows.values():
            self._count(state)

    def _handing_over(self, rows: dict[int, tuple[int, str]]) -> bool:
        """Whether the workers take these rows: once one runs, or once mail waits for
        them (processing here meanwhile could overtake their batches)."""
        if self.handoff is None:
            return False
        running = self.handoff() if any(s in _UNPROCESSED for _, s in rows.values()) else False
        return running or bool(self._waiting or self._order.held)

    def _hand_over(self, rows: dict[int, tuple[int, str]]) -> None:
        """Rows still to do wait for the worker processes (woken above); the rest are final."""
        for uid, (raw_id, state) in rows.items():
            if state in _UNPROCESSED:
                self._waiting[uid] = raw_id
            else:
                self._count(state)
                self._order.settled([uid])

    def _process(self, raw_ids: list[int]) -> list[str]:
        if self.ingest_batch is not None and raw_ids:
            return self.ingest_batch(raw_ids)
        return [self.ingest(raw_id) for raw_id in raw_ids]

    def _dispose_settled(self, client: IMAPClient) -> None:
        """Handed-over messages whose rows are final now: marked, moved or deleted on the
        server (set aside when failed), and last_uid moved up to the oldest still open;
        then the replies held back for them are fetched again and handed over."""
        if self._waiting:
            self._dispose_final(client)
        due = self._order.due()
        if due:
            sizes = {uid: {b"RFC822.SIZE": size} for uid, size in due.items()}
            for batch in self._batches(sorted(due), sizes):
                self._handle_batch(client, batch, sizes)

    def _dispose_final(self, client: IMAPClient) -> None:
        states = self._row_states(list(self._waiting.values()))
        done: list[int] = []
        failed: list[int] = []
        for uid, raw_id in list(self._waiting.items()):
            # A row gone meanwhile (deleted by hand): nothing left to wait for.
            state = states.get(raw_id, RawState.IGNORED)
            if state in _UNPROCESSED:
                continue
            (failed if state in FAILED_STATES else done).append(uid)
            self.counts[state] = self.counts.get(state, 0) + 1  # the worker reported it
        if not done and not failed:
            return
        self._after_ingest(client, done)
        self._after_failure(client, failed)
        for uid in (*done, *failed):
            del self._waiting[uid]
        self._order.settled([*done, *failed])
        self._advance(throttled=True)

    def _row_states(self, raw_ids: list[int]) -> dict[int, str]:
        states: dict[int, str] = {}
        with self.reader() as session:
            for start in range(0, len(raw_ids), STATE_CHUNK):
                chunk = raw_ids[start : start + STATE_CHUNK]
                query = select(RawMessage.id, RawMessage.state).where(RawMessage.id.in_(chunk))
                states.update({raw_id: state for raw_id, state in session.execute(query)})
        return states

    def _stored_before(self, digests: list[str]) -> dict[str, tuple[int, str]]:
        """Rows of the same bytes fetched before a crash or a UIDVALIDITY reset: reused,
        so that a refetch neither stores nor processes a message twice."""
        return stored_before(self.reader, digests, "imap")

    def _store_oversize(self, client: IMAPClient, uid: int, size: int) -> str | None:
        """Record the headers only (the body is never loaded) and apply oversize_policy."""
        fetched = client.fetch([uid], ["BODY.PEEK[HEADER]"]).get(uid)
        if fetched is None:
            return None
        headers: bytes = fetched[b"BODY[HEADER]"]
        skip = self.mailbox.oversize_policy == "skip"
        state = RawState.IGNORED if skip else RawState.FAILED
        reason = f"oversize {size} bytes"
        record_unfetched(self.sessions, headers, "imap", self._envelope(uid), state, reason)
        log.warning(
            "mailbox=%s uid=%s %s over the limit; recorded as %s", self.name, uid, reason, state
        )
        self._count("oversize")
        return None if skip else state  # skipped: left untouched on the server

    def _envelope(self, uid: int) -> dict[str, Any]:
        return {
            "mailbox": self.name,
            "folder": self.mailbox.folder,
            "uid": uid,
            "uidvalidity": self.uidvalidity,
        }

    def _advance(self, throttled: bool = False) -> None:
        """Persist the settled position: every UID up to the oldest handed-over one."""
        open_uids = [*self._waiting, *self._order.held]
        if throttled and open_uids and time.monotonic() - self._advanced < ADVANCE_SECONDS:
            return
        self._advanced = time.monotonic()
        uid = min(open_uids) - 1 if open_uids else self._fetched
        with self.sessions.begin() as session:
            state = self._state(session)
            state.last_uid = max(state.last_uid, uid)
            state.last_success_at = utcnow()
            state.last_error = None
            self.last_uid = state.last_uid

    def _count(self, state: str) -> None:
        self.counts[state] = self.counts.get(state, 0) + 1
        if self.on_outcome is not None:
            self.on_outcome(state)

    # --- after ingest: the server copy ------------------------------------------------------

    def _after_ingest(self, client: IMAPClient, uids: list[int]) -> None:
        if not uids:
            return
        action = self.mailbox.after_ingest
        if action == "seen":
            client.add_flags(uids, [SEEN], silent=True)
        elif action == "move":
            self._move(client, uids, self.mailbox.processed_folder)
        else:
            client.delete_messages(uids, silent=True)
            self._expunge(client, uids)

    def _after_failure(self, client: IMAPClient, uids: list[int]) -> None:
        """Failed mail stays in the store as failed; on the server it is set aside."""
        if not uids:
            return
        if self.mailbox.error_folder:
            self._move(client, uids, self.mailbox.error_folder)
        else:
            client.add_flags(uids, [FLAGGED], silent=True)

    def _move(self, client: IMAPClient, uids: list[int], folder: str) -> None:
        self._ensure_folder(client, folder)
        if client.has_capability("MOVE"):
            client.move(uids, folder)
            return
        client.copy(uids, folder)  # RFC 6851's fallback: COPY, then remove the originals
        client.delete_messages(uids, silent=True)
        self._expunge(client, uids)

    def _expunge(self, client: IMAPClient, uids: list[int]) -> None:
        if client.has_capability("UIDPLUS"):
            client.uid_expunge(uids)
        else:
            client.expunge()  # also removes others' \Deleted mail: the only way left

    def _ensure_folder(self, client: IMAPClient, folder: str) -> None:
        if folder in self._folders:
            return
        if not client.folder_exists(folder):
            try:
                client.create_folder(folder)
            except IMAPClientError:
                if not client.folder_exists(folder):  # not a race with another client
                    raise
        self._folders.add(folder)


def _size(sizes: dict[int, Any], uid: int) -> int:
    """RFC822.SIZE of `uid` in a FETCH response (0 when the server did not say)."""
    return int(sizes.get(uid, {}).get(b"RFC822.SIZE", 0))


# --- status ----------------------------------------------------------------------


def mailbox_status(
    sessions: sessionmaker[Session], mailboxes: list[ImapMailbox], now: datetime | None = None
) -> list[dict[str, Any]]:
    """Per-mailbox progress and health, for metrics and `buzon doctor`."""
    now = now or utcnow()
    return [_status(sessions, mailbox, now) for mailbox in mailboxes]


def _status(sessions: sessionmaker[Session], mailbox: ImapMailbox, now: datetime) -> dict[str, Any]:
    with sessions() as session:
        state = session.get(ImapMailboxState, mailbox.name) or ImapMailboxState(last_uid=0)
    lease = leases.holder_of(sessions, f"imap:{mailbox.name}", now)
    refreshed, success = state.token_refreshed_at, state.last_success_at
    return {
        "name": mailbox.name,
        "host": mailbox.host,
        "folder": mailbox.folder,
        "uidvalidity": state.uidvalidity,
        "last_uid": state.last_uid,
        "last_success_at": success,
        "seconds_since_success": (now - success).total_seconds() if success else None,
        "last_error": state.last_error,
        "token_refreshed_at": refreshed,
        "token_age_seconds": (now - refreshed).total_seconds() if refreshed else None,
        "lease_holder": lease[0] if lease else None,
        "lease_expires_at": lease[1] if lease else None,
    }
