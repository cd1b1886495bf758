"""From a stored raw message to tickets: the one path every intake shares.

`process` parses, dedupes, classifies, threads and applies, in one transaction; the
queue of stored messages it reads from is `tickets.inbox`.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session
from sqlalchemy.orm import defer as defer_column
from sqlalchemy.orm.attributes import set_committed_value

from parsers import Address, ParsedMessage, parse
from parsers.message import MailKind
from parsers.thread_keys import (
    looks_like_ours,
    remove_tag,
    strip_reply_prefixes,
    ticket_from_address,
    ticket_from_message_id,
    ticket_from_subject,
)
from tickets import agent_mail, survey
from tickets.addresses import base_address, clear_bouncing, mark_bouncing
from tickets.blobstore import BlobStore
from tickets.changes import Change, CustomerReplied, Imported, TicketCreated
from tickets.confirmation import confirms
from tickets.errors import TicketError, describe
from tickets.inbox import Backoff, SessionFactory, bounded_id, defer, fail
from tickets.lifecycle import DEFERRED, Status, change_status, record
from tickets.loaded import hold, insert_rows
from tickets.models import (
    Article,
    ArticleKind,
    AttachmentFile,
    MailAddress,
    OutboxMessage,
    Participant,
    ParticipantRole,
    RawMessage,
    RawState,
    Ticket,
    utcnow,
)
from tickets.policy import MailPolicy
from tickets.routing import Incoming, apply_route, route

log = logging.getLogger("buzon.ingest")

AfterApply = Callable[[Session, list[Change]], None]
# Called on a ticket being opened, before its INSERT: it sets the SLA due times then, so
# that the row is written once, not inserted and updated right after.
OnNew = Callable[[Ticket], None]

# `session.info` key: the articles this transaction wrote, held (see `_add_article`).
WRITTEN = "buzon.ingest.written"
# `session.info` key set by a batch: the head of each mail it applies (raw id -> bytes),
# kept from the read that parsed it.
HEADS = "buzon.ingest.heads"
# `session.info` key: the ticket opened by each mail of the transaction, with that mail's
# head (ticket id -> (ticket, bytes)); see `opening_head`.
OPENING_HEADS = "buzon.ingest.opening_heads"
# A mail's head: its first 64 KiB, which hold its headers (a large mail is not read whole).
HEADER_SPAN = 65536
NO_SUBJECT = "(sin asunto)"
ROUTING_ACTOR = "buzon-routing"
FINISHED = (RawState.PROCESSED, RawState.IGNORED, RawState.SPAM)
# A reply whose original is being processed waits 1 s, then 2, 4… up to 30 s.
ORIGINAL_WAIT = Backoff(1.0, 30.0)

# A Message-ID is stored (and looked up) in at most this many UTF-8 bytes: PostgreSQL's
# btree refuses index rows over ~2.7 KB, and the dedupe key adds the content digest.
MAX_ADDRESS = 320  # the address columns; a longer "address" is no mailbox
MAX_RECORDED_REFUSALS = 200  # watchers left out of one mail, recorded one by one


@dataclass(frozen=True)
class Outcome:
    raw_id: int
    state: str
    ticket_id: int | None = None
    article_id: int | None = None
    reason: str | None = None
    changes: tuple[Change, ...] = field(default=())


@dataclass
class Known:
    """What a batch looked up once for all its mails (two queries, not two per mail):
    which dedupe keys are stored, and which senders are marked bouncing (only theirs
    need the UPDATE that lifts the mark). Mails of the batch add what they store."""

    articles: dict[str, tuple[int, int]] = field(default_factory=dict)  # key → article, ticket
    keys: set[str] = field(default_factory=set)  # the dedupe keys `articles` answers for
    bouncing: set[str] = field(default_factory=set)
    senders: set[str] = field(default_factory=set)  # the senders `bouncing` answers for

    def may_bounce(self, email: str) -> bool:
        email = email.lower()  # as the marks are stored
        return email not in self.senders or email in self.bouncing

    def learn(self, msg: ParsedMessage, outcome: Outcome) -> None:
        """After a mail of the batch: its article is stored; a bounce may have marked
        anyone (the senders' marks are looked up again, one by one)."""
        if outcome.article_id is not None and outcome.ticket_id is not None:
            key = _dedupe_key(msg)
            self.articles[key] = (outcome.article_id, outcome.ticket_id)
            self.keys.add(key)
        if msg.kind is MailKind.BOUNCE:
            self.senders.clear()


def look_up(
    session: Session, policy: MailPolicy, mails: list[tuple[RawMessage, ParsedMessage]]
) -> Known:
    """The batch's lookups, inside its transaction."""
    known = Known(keys={_dedupe_key(msg) for _, msg in mails})
    stored = select(Article.dedupe_key, Article.id, Article.ticket_id).where(
        Article.dedupe_key.in_(known.keys)
    )
    for key, article_id, ticket_id in session.execute(stored):
        if key is not None:
            known.articles[key] = (article_id, ticket_id)
    senders = {s.email.lower() for row, msg in mails if (s := _sender(policy, row, msg))}
    if senders:
        marked = select(MailAddress.email).where(
            MailAddress.email.in_(senders), MailAddress.bouncing.is_(True)
        )
        known.bouncing = set(session.scalars(marked))
    known.senders = senders
    return known


# --- process ------------------------------------------------------------------------------


def process(
    sf: SessionFactory,
    policy: MailPolicy,
    raw_id: int,
    after_apply: AfterApply | None = None,
    on_new: OnNew | None = None,
) -> Outcome:
    """Parse and apply one stored message. Never raises for the message's own failures:
    the row records them (`failed`, then `quarantined`). A transient failure (disk full,
    database away) puts it back in the queue with a backoff; only when even that cannot
    be written (the database is gone) does the error reach the caller, the row unharmed."""
    for attempt in range(2):
        try:
            return _process_once(sf, policy, raw_id, after_apply, on_new)
        except IntegrityError as exc:
            # Another worker committed the same message a moment ago: the second pass
            # finds it as a duplicate. A second refusal is this mail's own.
            if attempt == 1:
                return _record_failure(sf, policy, raw_id, exc)
        except Exception as exc:  # noqa: BLE001 - every failure ends in the row's state
            if is_transient(exc):
                return retry_later(sf, policy, raw_id, exc)
            return _record_failure(sf, policy, raw_id, exc)
    raise AssertionError("unreachable")


# --- what kind of failure -----------------------------------------------------------------

# The disk or the machine, not the mail: full, read-only, I/O, out of handles.
_TRANSIENT_ERRNOS = frozenset(
    {
        errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EAGAIN, errno.ENOMEM, errno.EMFILE,
        errno.ENFILE, errno.EROFS, errno.EACCES, errno.EPERM, errno.ETIMEDOUT, errno.EBUSY,
        errno.ESTALE, errno.EINTR,
    }
)  # fmt: skip
# SQLSTATE classes of the server's state, not of the statement's values: connection (08),
# rollback (40: deadlock, serialization), resources (53: disk full), operator (57:
# shutdown, statement timeout), system (58: I/O); and 55P03, lock not available.
_TRANSIENT_SQLSTATES = ("08", "40", "53", "57", "58", "55P03")


def is_transient(exc: BaseException) -> bool:
    """True when trying again later may succeed with the same bytes.

    Database errors are told apart by what the server said about the statement (its
    SQLSTATE), not by the driver's class alone: PostgreSQL reports "index row too big"
    as an OperationalError, yet it is this mail's content that it refuses.
    """
    if isinstance(exc, DisconnectionError | PoolTimeout):
        return True
    if isinstance(exc, DBAPIError):
        return _db_transient(exc)
    if isinstance(exc, OSError):
        return exc.errno in _TRANSIENT_ERRNOS
    return False


def _db_transient(exc: DBAPIError) -> bool:
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate:
        return str(sqlstate).startswith(_TRANSIENT_SQLSTATES)
    # No SQLSTATE: SQLite (busy, locked, disk full or I/O are all OperationalError; what it
    # refuses in a value is a DataError or IntegrityError) or a connection never opened.
    return isinstance(exc, OperationalError | InterfaceError)


def _process_once(
    sf: SessionFactory,
    policy: MailPolicy,
    raw_id: int,
    after_apply: AfterApply | None,
    on_new: OnNew | None,
) -> Outcome:
    # Parsed before the write transaction: a hostile mail's parse (within the parser's
    # limits) never holds SQLite's write lock, nor a row lock on PostgreSQL.
    raw = _unfinished_bytes(sf, raw_id)
    if isinstance(raw, Outcome):
        return raw
    parsed = parse(raw, policy.limits, policy.spam)
    del raw  # not held through the transaction: a 25 MB mail's bytes are a quarter of its peak
    with sf.begin() as session:
        # The bytes were read (and parsed) above: not loaded a second time with the lock.
        row = session.get(
            RawMessage, raw_id, with_for_update=True, options=[defer_column(RawMessage.raw)]
        )
        if row is None:
            raise TicketError(f"no raw message {raw_id}")
        if row.state in FINISHED:  # another worker finished it meanwhile
            return Outcome(raw_id, row.state, row.ticket_id, row.article_id, row.reason)
        row.message_id = bounded_id(parsed.message_id)
        outcome = apply_parsed(session, policy, row, parsed, after_apply, on_new)
        row.state, row.reason = outcome.state, outcome.reason
        if outcome.state == RawState.PENDING:  # waits for its original: not an attempt
            row.retry_at, row.retries = wait_for_original(row, utcnow())
            row.claimed_at = row.claimed_by = None
        else:
            row.ticket_id, row.article_id = outcome.ticket_id, outcome.article_id
            row.processed_at = utcnow()
            row.attempts += 1
    log.info(
        "processed raw=%s state=%s ticket=%s reason=%s",
        raw_id,
        outcome.state,
        outcome.ticket_id,
        outcome.reason,
    )
    return outcome


def apply_parsed(
    session: Session,
    policy: MailPolicy,
    row: RawMessage,
    parsed: ParsedMessage,
    after_apply: AfterApply | None,
    on_new: OnNew | None,
    known: Known | None = None,
) -> Outcome:
    """Inside the caller's transaction: what one parsed mail means, applied, and what
    follows its changes (SLA clocks, mail). The caller records the outcome on the row."""
    outcome = _apply(session, policy, row, parsed, on_new, known)
    if after_apply is not None and outcome.changes:
        after_apply(session, list(outcome.changes) + _quiet(policy, row, parsed, outcome))
    return outcome


def _unfinished_bytes(sf: SessionFactory, raw_id: int) -> bytes | Outcome:
    """The stored bytes to parse, or the outcome when the row is already finished."""
    with sf() as session:
        row = session.get(RawMessage, raw_id)
        if row is None:
            raise TicketError(f"no raw message {raw_id}")
        if row.state in FINISHED:
            return Outcome(raw_id, row.state, row.ticket_id, row.article_id, row.reason)
        return row.raw


def _quiet(
    policy: MailPolicy, row: RawMessage, msg: ParsedMessage, outcome: Outcome
) -> list[Change]:
    """A backfill (unless `--notify`) and mail from long ago tell nobody anything: the
    tickets and their history are made, no mail goes out for them."""
    if outcome.ticket_id is None or not _from_the_past(policy, row, msg):
        return []
    return [Imported(outcome.ticket_id)]


def _from_the_past(policy: MailPolicy, row: RawMessage, msg: ParsedMessage) -> bool:
    if row.source == "backfill" and not row.envelope.get("notify"):
        return True
    if msg.date is None:
        return False
    return (utcnow() - msg.date).total_seconds() > policy.acknowledge_max_age_hours * 3600


def _record_failure(sf: SessionFactory, policy: MailPolicy, raw_id: int, exc: Exception) -> Outcome:
    error = describe(exc, 500)  # never the SQL parameters: they carry the mail
    log.warning("process failed raw=%s error=%s", raw_id, error)
    state = fail(sf, raw_id, error, policy.max_attempts)
    return Outcome(raw_id, state, reason=error)


def retry_later(sf: SessionFactory, policy: MailPolicy, raw_id: int, exc: Exception) -> Outcome:
    error = describe(exc, 500)
    backoff = Backoff(policy.retry_base_seconds, policy.retry_max_seconds)
    state, delay = defer(sf, raw_id, error, backoff)
    log.warning("process deferred raw=%s retry_in=%gs error=%s", raw_id, delay, error)
    return Outcome(raw_id, state, reason=f"retrying in {delay:g}s: {error}")


# --- apply: decide what the message means -------------------------------------------------


def _dedupe_key(msg: ParsedMessage) -> str:
    """One article per message: the bounded Message-ID and the content digest."""
    return f"{bounded_id(msg.message_id) or ''}|{msg.content_digest}"


def _usable(address: Address) -> bool:
    """An address we can store and answer: bounded, no NUL, with a domain."""
    email = address.email
    return 3 <= len(email) <= MAX_ADDRESS and "@" in email and "\x00" not in email


def _apply(
    session: Session,
    policy: MailPolicy,
    row: RawMessage,
    msg: ParsedMessage,
    on_new: OnNew | None = None,
    known: Known | None = None,
) -> Outcome:
    dedupe_key = _dedupe_key(msg)
    duplicate = _duplicate(session, dedupe_key, known)
    if duplicate is not None:
        article_id, ticket_id = duplicate
        return Outcome(
            row.id, RawState.IGNORED, ticket_id, article_id, f"duplicate of article {article_id}"
        )
    if msg.spam_reason and not row.envelope.get("released"):
        return Outcome(row.id, RawState.SPAM, reason=f"spam: {msg.spam_reason}"[:500])
    if msg.kind is MailKind.BOUNCE:
        return _apply_bounce(session, policy, row, msg)

    sender = _sender(policy, row, msg)
    if msg.is_automatic:
        ticket = _find_ticket(session, policy, msg, sender, row.envelope)
        return Outcome(
            row.id,
            RawState.IGNORED,
            ticket.id if ticket else None,
            reason=f"{msg.kind.value}: {msg.kind_reason}",
        )
    if sender is None:
        return Outcome(row.id, RawState.IGNORED, reason="no sender address to answer")
    binding = _agent_binding(policy, row, msg, sender)
    if binding is not None:  # an agent, bound by a signed agent reply address (invariant 9)
        return _apply_agent(session, policy, row, msg, binding, dedupe_key)
    if policy.is_own(sender.email):
        return Outcome(row.id, RawState.IGNORED, reason="sent from one of our own addresses")
    if known is None or known.may_bounce(sender.email):
        clear_bouncing(session, [sender.email])  # it writes to us: its mailbox works again

    return _to_ticket(session, policy, row, msg, sender, dedupe_key, on_new)


def _to_ticket(
    session: Session,
    policy: MailPolicy,
    row: RawMessage,
    msg: ParsedMessage,
    sender: Address,
    dedupe_key: str,
    on_new: OnNew | None,
) -> Outcome:
    """A customer's mail: onto its ticket, or a ticket of its own."""
    ticket = _find_ticket(session, policy, msg, sender, row.envelope)
    if ticket is not None and ticket.status != Status.CLOSED:
        if session.get_bind().dialect.name != "sqlite":
            # No lost updates across workers. SQLite's BEGIN IMMEDIATE locked the whole
            # database before this transaction read the ticket: it is current already.
            session.refresh(ticket, with_for_update=True)
        return _apply_reply(session, policy, row, msg, sender, ticket, dedupe_key)
    if ticket is not None and (rating := survey.survey_rating(session, ticket, msg)) is not None:
        # An answer to the closing survey: kept on the closed ticket, no follow-up ticket.
        article = _add_article(session, policy, row, msg, ticket, sender, dedupe_key)
        survey.record_rating(session, ticket, rating, sender.email, article.id)
        return Outcome(row.id, RawState.PROCESSED, ticket.id, article.id, "survey answer")
    if ticket is None and (original := _original_in_flight(session, row, msg)) is not None:
        return Outcome(row.id, RawState.PENDING, reason=f"waits for its original <{original}>")
    return _open_ticket(session, policy, row, msg, sender, dedupe_key, ticket, on_new)


def _original_in_flight(session: Session, row: RawMessage, msg: ParsedMessage) -> str | None:
    """The Message-ID this mail answers that an earlier stored mail carries and that
    no one has finished yet: another worker holds it right now (worker processes take
    batches side by side), or it waits for a retry. Its ticket does not exist yet, so
    this mail waits for it rather than open a ticket of its own."""
    answered = {bounded_id(mid) for mid in (*msg.in_reply_to, *msg.references)} - {None}
    if not answered:
        return None
    return session.scalar(
        select(RawMessage.message_id)
        .where(
            RawMessage.state.in_((RawState.PENDING, RawState.PROCESSING)),
            RawMessage.id < row.id,
            RawMessage.message_id.in_(answered),
            # Earlier mail of this same batch was applied already, in this transaction.
            RawMessage.claimed_by.is_distinct_from(row.claimed_by),
        )
        .limit(1)
    )


def wait_for_original(row: RawMessage, now: datetime) -> tuple[datetime, int]:
    """When a reply waiting for its original is tried again (its `retry_at`), and its
    `retries`: a short wait, doubling, since the original is being processed now."""
    return now + timedelta(seconds=ORIGINAL_WAIT.delay(row.retries)), row.retries + 1


def _duplicate(session: Session, key: str, known: Known | None) -> tuple[int, int] | None:
    """The article (and its ticket) already stored for this dedupe key, if any."""
    if known is not None and key in known.keys:
        return known.articles.get(key)
    found = session.execute(
        select(Article.id, Article.ticket_id).where(Article.dedupe_key == key)
    ).first()
    return (found[0], found[1]) if found is not None else None


def _sender(policy: MailPolicy, row: RawMessage, msg: ParsedMessage) -> Address | None:
    """Whom to answer: Reply-To when honoured, From, the envelope; the first usable one."""
    candidates = list(msg.reply_to[:1]) if policy.honour_reply_to else []
    if msg.from_addr is not None:
        candidates.append(msg.from_addr)
    mail_from = str(row.envelope.get("mail_from") or "").strip().lower()
    if "@" in mail_from:
        candidates.append(Address(mail_from))
    return next((a for a in candidates if _usable(a)), None)


def _find_ticket(
    session: Session,
    policy: MailPolicy,
    msg: ParsedMessage,
    sender: Address | None,
    envelope: dict[str, Any],
) -> Ticket | None:
    """Conservative threading: our Message-IDs, known Message-IDs (only from someone who
    belongs on the ticket), a signed plus-address, then the subject tag (likewise)."""
    found = (
        _by_references(session, policy, msg, sender)
        or _by_plus_address(session, policy, msg, envelope)
        or _by_subject(session, policy, msg, sender)
    )
    return _survivor(session, found)


def _survivor(session: Session, ticket: Ticket | None) -> Ticket | None:
    """A merged ticket's mail goes to the ticket it was merged into."""
    for _ in range(20):  # a chain of merges; a loop (impossible by design) ends here
        if ticket is None or ticket.merged_into_id is None:
            return ticket
        ticket = session.get(Ticket, ticket.merged_into_id)
    return ticket


def _by_references(
    session: Session, policy: MailPolicy, msg: ParsedMessage, sender: Address | None
) -> Ticket | None:
    for mid in (*msg.in_reply_to, *reversed(msg.references)):
        ticket, ours = _ticket_by_reference(session, policy, mid)
        if ticket is None:
            continue
        strict = policy.message_id_requires_participant
        if ours or _may_join(session, policy, ticket, sender, strict):
            return ticket
        log.info("known Message-ID of ticket=%s ignored: sender is not a participant", ticket.id)
    return None


def _by_plus_address(
    session: Session, policy: MailPolicy, msg: ParsedMessage, envelope: dict[str, Any]
) -> Ticket | None:
    rcpts = [a.email for a in (*msg.to, *msg.cc)]
    rcpts += [*msg.delivered_to, *(envelope.get("rcpt_tos") or [])]
    for address in rcpts:
        number = ticket_from_address(policy.secret, address) if policy.is_own(address) else None
        if number is not None and (ticket := session.get(Ticket, number)) is not None:
            return ticket
    return None


def _by_subject(
    session: Session, policy: MailPolicy, msg: ParsedMessage, sender: Address | None
) -> Ticket | None:
    number = ticket_from_subject(policy.subject_tag, msg.subject)
    ticket = session.get(Ticket, number) if number is not None else None
    if ticket is None:
        return None
    if _may_join(session, policy, ticket, sender, policy.tag_requires_participant):
        return ticket
    log.info("subject tag of ticket=%s ignored: sender is not a participant", ticket.id)
    return None


def _may_join(
    session: Session, policy: MailPolicy, ticket: Ticket, sender: Address | None, strict: bool
) -> bool:
    if sender is None:
        return False
    return not strict or _belongs(session, policy, ticket, sender.email)


def _ticket_by_message_id(session: Session, policy: MailPolicy, mid: str) -> Ticket | None:
    return _ticket_by_reference(session, policy, mid)[0]


def _ticket_by_reference(
    session: Session, policy: MailPolicy, mid: str
) -> tuple[Ticket | None, bool]:
    """The ticket a Message-ID names, and whether the id is ours (signed by us, or of a
    mail we sent) rather than a customer's, which anyone CC'd may have seen."""
    if looks_like_ours(mid):
        number = ticket_from_message_id(policy.secret, mid)
        return (session.get(Ticket, number) if number is not None else None), True  # forged: none
    key = bounded_id(mid)
    # The ticket with the article's kind, in one query: the article itself (its whole
    # text) is not needed.
    found = session.execute(
        select(Ticket, Article.kind)
        .join(Article, Article.ticket_id == Ticket.id)
        .where(Article.message_id == key)
        .order_by(Article.id)
        .limit(1)
    ).first()
    if found is not None:
        return found[0], found[1] == ArticleKind.OUTBOUND
    outbound = session.scalar(select(OutboxMessage).where(OutboxMessage.message_id == key))
    if outbound is not None and outbound.ticket_id is not None:
        return session.get(Ticket, outbound.ticket_id), True
    return None, False


def _belongs(session: Session, policy: MailPolicy, ticket: Ticket, email: str) -> bool:
    if policy.is_agent(email):
        return True
    # The collection, not a query of its own: a reply that joins reads it next anyway.
    email = email.lower()
    return any(p.email == email for p in ticket.participants)


def _open_ticket(
    session: Session,
    policy: MailPolicy,
    row: RawMessage,
    msg: ParsedMessage,
    sender: Address,
    dedupe_key: str,
    parent: Ticket | None,
    on_new: OnNew | None,
) -> Outcome:
    subject = strip_reply_prefixes(remove_tag(policy.subject_tag, msg.subject)) or NO_SUBJECT
    language = msg.language if msg.language in ("es", "en") else policy.default_language
    recipients = _recipients(msg, row.envelope)
    now = utcnow()
    ticket = Ticket(
        subject=subject[:2000],
        status=Status.NEW.value,
        requester=sender.email,
        language=language,
        parent_id=parent.id if parent else None,
        queue_address=next((a for a in recipients if policy.is_own(a)), None),
        # The column defaults, set here: the SLA clocks read them before the INSERT.
        priority="P3",
        level=1,
        category="general",
        tags=[],
        sla_paused_seconds=0,
        created_at=now,
        updated_at=now,
    )
    # Everything the ticket row holds is decided before its INSERT (routing, then the
    # SLA clocks through `on_new`): one INSERT, no UPDATE of the row just written. Kept
    # pending until then, its participants and events collections start known and empty
    # (no lazy load of what this very mail added). Where the events are held for the
    # transaction's end, nothing needs the ticket in the session before it is written by
    # Core (`tickets.loaded`); elsewhere the unit of work writes it.
    direct: list[Participant] | None = [] if _writes_directly(session) else None
    if direct is None:
        session.add(ticket)
    _add_participant(session, ticket, sender, ParticipantRole.REQUESTER, policy, direct)
    _add_copied(session, policy, ticket, msg, sender, {sender.email}, direct)
    # Dated like the notifier's events (`at`): with the same columns, the previous mail's
    # "notified" and this "created" are one executemany (one statement on PostgreSQL).
    record(session, ticket, "created", sender.email, source=row.source, raw_id=row.id, at=now)
    routed = route(policy.routing, _incoming(row, msg, sender, recipients))
    apply_route(session, ticket, routed, policy.matrix, ROUTING_ACTOR)
    if on_new is not None:
        on_new(ticket)
    if direct is not None:
        _write_opened(session, ticket, direct)
    article = _add_article(session, policy, row, msg, ticket, sender, dedupe_key)
    head = session.info.get(HEADS, {}).get(row.id)
    if head is not None:
        session.info.setdefault(OPENING_HEADS, {})[ticket.id] = (ticket, head)
    if parent is not None:
        record(
            session,
            ticket,
            "linked",
            sender.email,
            field="parent",
            new=parent.id,
            note="reply to a closed ticket",
        )
        record(session, parent, "linked", sender.email, field="follow_up", new=ticket.id)
    return Outcome(
        row.id,
        RawState.PROCESSED,
        ticket.id,
        article.id,
        changes=(TicketCreated(ticket.id, article.id, routed.actions.acknowledge is not False),),
    )


def _writes_directly(session: Session) -> bool:
    """Whether this transaction writes new tickets and articles by Core: where its events
    are held for its end (a batch's optimistic pass), no ORM event refers to them."""
    return session.info.get(DEFERRED) is not None


def _write_opened(session: Session, ticket: Ticket, participants: list[Participant]) -> None:
    """The ticket and its participants, by Core, then held by the session as loaded."""
    insert_rows(session, [ticket])
    for person in participants:
        person.ticket_id = ticket.id
    insert_rows(session, participants)
    set_committed_value(ticket, "participants", participants)
    set_committed_value(ticket, "events", [])
    hold(session, [ticket, *participants])


def _recipients(msg: ParsedMessage, envelope: dict[str, Any]) -> list[str]:
    """Every address the mail was sent to, the envelope's first (it is what the MTA saw)."""
    found = [str(a).lower() for a in envelope.get("rcpt_tos") or []]
    found += [*msg.delivered_to, *(a.email for a in (*msg.to, *msg.cc))]
    return [base_address(a) for a in dict.fromkeys(found)]


def _incoming(
    row: RawMessage, msg: ParsedMessage, sender: Address, recipients: list[str]
) -> Incoming:
    mailbox = row.envelope.get("mailbox")
    source = f"imap:{mailbox}" if row.source == "imap" and mailbox else row.source
    return Incoming(tuple(recipients), source, sender.email, msg.subject, msg.new_text)


def _apply_reply(
    session: Session,
    policy: MailPolicy,
    row: RawMessage,
    msg: ParsedMessage,
    sender: Address,
    ticket: Ticket,
    dedupe_key: str,
) -> Outcome:
    known = {p.email for p in ticket.participants}
    if sender.email not in known:  # whoever writes to the ticket joins it
        _add_participant(session, ticket, sender, _role_for(policy, sender), policy)
        known.add(sender.email)
    _add_copied(session, policy, ticket, msg, sender, known)
    article = _add_article(session, policy, row, msg, ticket, sender, dedupe_key)
    record(session, ticket, "article", sender.email, field="article", new=article.id)
    changes: list[Change] = [CustomerReplied(ticket.id, article.id)]
    if not policy.is_agent(sender.email) and ticket.status in (
        Status.WAITING_ON_CUSTOMER,
        Status.RESOLVED,
    ):
        changes += _customer_moves(session, ticket, msg, sender)
    ticket.updated_at = utcnow()
    return Outcome(row.id, RawState.PROCESSED, ticket.id, article.id, changes=tuple(changes))


def _customer_moves(
    session: Session, ticket: Ticket, msg: ParsedMessage, sender: Address
) -> list[Change]:
    """A customer's reply to a ticket waiting on them, or resolved: a confirmation closes a
    resolved ticket (seed 004), anything else puts it back in progress."""
    if ticket.status == Status.RESOLVED and confirms(
        msg.new_text or msg.text, attachments=len(msg.attachments)
    ):
        why = "resolution confirmed by the customer"
        return change_status(session, ticket, Status.CLOSED, sender.email, note=why)
    note = "reopened by the customer's reply" if ticket.status == Status.RESOLVED else None
    return change_status(session, ticket, Status.IN_PROGRESS, sender.email, note=note)


def _copied(policy: MailPolicy, msg: ParsedMessage, sender: Address) -> list[Address]:
    """Everyone else on To and Cc who is not us: they become watchers."""
    seen = {sender.email}
    result = []
    for address in (*msg.to, *msg.cc):
        if address.email in seen or policy.is_own(address.email):
            continue
        seen.add(address.email)
        result.append(address)
    return result


def _add_copied(
    session: Session,
    policy: MailPolicy,
    ticket: Ticket,
    msg: ParsedMessage,
    sender: Address,
    known: set[str],
    direct: list[Participant] | None = None,
) -> None:
    """The new people on To and Cc join the ticket: agents always, watchers up to
    `max_new_watchers` per mail. The others (and addresses we cannot store or answer)
    are recorded in the history as `notify_refused`, so /metrics counts them, and never
    become recipients: a forged mail CC'ing a hundred strangers reaches a few at most."""
    added = 0
    left_out: list[tuple[Address, str]] = []
    for address in _copied(policy, msg, sender):
        if address.email in known:
            continue
        role = _role_for(policy, address)
        if not _usable(address):
            left_out.append((address, "invalid_address"))
        elif role is ParticipantRole.WATCHER and added >= policy.max_new_watchers:
            left_out.append((address, "watcher_cap"))
        else:
            _add_participant(session, ticket, address, role, policy, direct)
            known.add(address.email)
            added += role is ParticipantRole.WATCHER
    _record_left_out(session, ticket, sender, left_out)


def _record_left_out(
    session: Session, ticket: Ticket, sender: Address, left_out: list[tuple[Address, str]]
) -> None:
    for address, reason in left_out[:MAX_RECORDED_REFUSALS]:
        record(session, ticket, "notify_refused", sender.email, field="watcher",
               new=address.email[:MAX_ADDRESS], recipient=address.email[:MAX_ADDRESS],
               reason=reason)  # fmt: skip
    if len(left_out) > MAX_RECORDED_REFUSALS:  # bounded history: the rest as a count
        more = len(left_out) - MAX_RECORDED_REFUSALS
        record(session, ticket, "watchers_not_added", sender.email, field="watcher", new=more)
    if left_out:
        log.info("ticket=%s: %d copied address(es) not added as watchers", ticket.id,
                 len(left_out))  # fmt: skip


def _role_for(policy: MailPolicy, address: Address) -> ParticipantRole:
    return ParticipantRole.AGENT if policy.is_agent(address.email) else ParticipantRole.WATCHER


def _add_participant(
    session: Session,
    ticket: Ticket,
    address: Address,
    role: ParticipantRole,
    policy: MailPolicy,
    direct: list[Participant] | None = None,
) -> None:
    """`direct`: the participants of a ticket being opened by Core, collected there."""
    person = Participant(email=address.email, name=address.name[:300], role=role)
    if direct is None:
        person.ticket = ticket
        session.add(person)
    else:
        direct.append(person)
    if role is not ParticipantRole.REQUESTER:
        record(session, ticket, "participant", address.email, field=role.value, new=address.email)


def _add_article(
    session: Session,
    policy: MailPolicy,
    row: RawMessage,
    msg: ParsedMessage,
    ticket: Ticket,
    sender: Address,
    dedupe_key: str,
) -> Article:
    direct = _writes_directly(session)
    article = Article(
        kind=ArticleKind.INBOUND,
        message_id=bounded_id(msg.message_id),
        content_digest=msg.content_digest,
        dedupe_key=dedupe_key,
        raw_message_id=row.id,
        from_addr=sender.email,
        from_name=sender.name,
        to_addrs=[a.email for a in msg.to],
        cc_addrs=[a.email for a in msg.cc],
        subject=msg.subject,
        text=msg.text,
        html=msg.html,
        new_text=msg.new_text,
        author=sender.email if policy.is_agent(sender.email) else None,
    )
    blobs = BlobStore(policy.attachments_dir)
    files = [
        AttachmentFile(
            sha256=blobs.put(item.payload),
            filename=item.filename[:255],
            content_type=item.content_type[:255],
            size=item.size,
            inline=item.inline,
            content_id=(item.content_id or "")[:998] or None,
        )
        for item in msg.attachments
    ]
    if direct:
        _write_article(session, ticket, article, files)
    else:
        article.ticket = ticket
        article.attachments.extend(files)
        session.add(article)
        session.flush()
    # Held until the transaction ends: the identity map keeps objects weakly, and the
    # notifiers read this article by id right after (no SELECT of what was just written).
    session.info.setdefault(WRITTEN, []).append(article)
    return article


def _write_article(
    session: Session, ticket: Ticket, article: Article, files: list[AttachmentFile]
) -> None:
    """The article and its attachments, by Core, then held by the session as loaded."""
    article.ticket_id = ticket.id
    insert_rows(session, [article])
    for file in files:
        file.article_id = article.id
    insert_rows(session, files)
    set_committed_value(article, "attachments", files)
    hold(session, [article, *files])
    if "articles" in ticket.__dict__:  # a list read before: read again when next wanted
        session.expire(ticket, ["articles"])


def opening_head(session: Session, ticket: Ticket) -> bytes | None:
    """The head of the mail that opened `ticket`, when this transaction opened it from a
    batch's mail (the ticket's first inbound article is that mail); else None. The very
    object is checked: a ticket rolled back to a savepoint may leave its id to another."""
    held = session.info.get(OPENING_HEADS, {}).get(ticket.id)
    if held is None or held[0] is not ticket:
        return None
    head: bytes = held[1]
    return head


# --- agents' mail (tickets.agent_mail) -------------------------------------------------------


def _agent_binding(
    policy: MailPolicy, row: RawMessage, msg: ParsedMessage, sender: Address
) -> agent_mail.AgentBinding | None:
    if not policy.is_agent(sender.email):
        return None  # not an agent: the raw bytes (deferred) are not loaded for nothing
    rcpts = [a.email for a in (*msg.to, *msg.cc)]
    rcpts += [*msg.delivered_to, *(row.envelope.get("rcpt_tos") or [])]
    return agent_mail.bind(policy, lambda: row.raw, msg, sender, rcpts)


def _apply_agent(
    session: Session,
    policy: MailPolicy,
    row: RawMessage,
    msg: ParsedMessage,
    binding: agent_mail.AgentBinding,
    dedupe_key: str,
) -> Outcome:
    done = agent_mail.apply(session, policy, row, msg, binding, dedupe_key)
    return Outcome(
        row.id, done.state, done.ticket_id, done.article_id, done.reason, changes=done.changes
    )


# --- bounces ------------------------------------------------------------------------------


def _apply_bounce(
    session: Session, policy: MailPolicy, row: RawMessage, msg: ParsedMessage
) -> Outcome:
    ticket = None
    if msg.dsn_original_message_id:
        ticket = _ticket_by_message_id(session, policy, msg.dsn_original_message_id)
    permanent = [f for f in msg.delivery_failures if f.permanent]
    for failure in permanent:
        if not _usable(Address(failure.recipient)):
            continue  # not an address we ever store or mail: nothing to mark
        mark_bouncing(session, failure.recipient, f"{failure.status} {failure.diagnostic}".strip())
    if ticket is not None:
        record(
            session,
            ticket,
            "bounce",
            "mailer-daemon",
            recipients=[f.recipient for f in msg.delivery_failures],
            permanent=bool(permanent),
        )
    failed = ", ".join(f.recipient for f in msg.delivery_failures) or "unknown recipient"
    return Outcome(
        row.id,
        RawState.IGNORED,
        ticket.id if ticket else None,
        reason=f"bounce for {failed}"[:500],
    )
