"""The store: every table buzón keeps. Times are naive UTC in the database, aware in code."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC without a zone (portable), always hands back aware datetimes."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use aware UTC")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def _without_nul(value: str | None) -> str | None:
    return None if value is None else value.replace("\x00", "")


class CleanText(TypeDecorator[str]):
    """Text from a mail, stored without NUL: SQLite keeps a NUL, PostgreSQL refuses the
    whole statement (and with it the mail). Comparisons go through it too, so a lookup
    sees the value as it was stored."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:
        return _without_nul(value)


class CleanString(TypeDecorator[str]):
    """A bounded String column with the same NUL rule (lengths are bounded by the code
    that knows what a cut means: a hash for keys, a refusal for addresses)."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:
        return _without_nul(value)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class RawState(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    PROCESSED = "processed"
    IGNORED = "ignored"
    FAILED = "failed"
    QUARANTINED = "quarantined"
    SPAM = "spam"  # the MTA's filters said so: no ticket, no mail; `inbound release` undoes


class ArticleKind(StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"
    NOTE = "note"


class ParticipantRole(StrEnum):
    REQUESTER = "requester"
    WATCHER = "watcher"
    AGENT = "agent"


class RawMessage(Base):
    """Exactly the bytes that reached us, with how they came; the intake queue's row."""

    __tablename__ = "raw_messages"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    source: Mapped[str] = mapped_column(String(16))  # smtp / lmtp / imap / pipe / backfill
    envelope: Mapped[dict[str, Any]] = mapped_column(default=dict)
    raw: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default=RawState.PENDING)
    reason: Mapped[str | None] = mapped_column(CleanText)  # why ignored / last error
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # content failures
    # Transient failures (disk full, database away) do not use up `attempts`: the row goes
    # back to pending, claimable again from `retry_at`, after `retries` doublings.
    retries: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    retry_at: Mapped[datetime | None]
    message_id: Mapped[str | None] = mapped_column(CleanString(998))
    # Plain columns, not foreign keys: the intake queue never depends on the domain.
    ticket_id: Mapped[int | None] = mapped_column(Integer)
    article_id: Mapped[int | None] = mapped_column(Integer)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_at: Mapped[datetime | None]
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    processed_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_raw_messages_state_id", "state", "id"),)


class Ticket(Base):
    """A ticket; its `id` is the human number shown as the subject tag."""

    __tablename__ = "tickets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject: Mapped[str] = mapped_column(CleanText, default="")
    status: Mapped[str] = mapped_column(String(32), default="new", index=True)
    level: Mapped[int] = mapped_column(Integer, default=1)
    priority: Mapped[str] = mapped_column(String(8), default="P3")
    impact: Mapped[str | None] = mapped_column(String(16))
    urgency: Mapped[str | None] = mapped_column(String(16))
    category: Mapped[str] = mapped_column(String(64), default="general")
    requester: Mapped[str] = mapped_column(CleanString(320), index=True)
    assignee: Mapped[str | None] = mapped_column(String(320))
    team: Mapped[str | None] = mapped_column(String(120))
    language: Mapped[str] = mapped_column(String(8), default="es")
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))  # closed → new
    # Merged into another ticket: mail that threads here goes there.
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    # The support address it was opened at: its queue, and the From of its mail.
    queue_address: Mapped[str | None] = mapped_column(String(320))
    tags: Mapped[list[Any]] = mapped_column(
        default=list, server_default="[]"
    )  # set by routing rules
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    first_response_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    # SLA clocks: due times are stored so that a scan is an index range query.
    first_response_due_at: Mapped[datetime | None] = mapped_column(index=True)
    resolution_due_at: Mapped[datetime | None] = mapped_column(index=True)
    first_response_warn_at: Mapped[datetime | None]
    resolution_warn_at: Mapped[datetime | None]
    sla_next_check_at: Mapped[datetime | None] = mapped_column(index=True)
    sla_paused_at: Mapped[datetime | None]
    sla_paused_seconds: Mapped[int] = mapped_column(Integer, default=0)
    survey_rating: Mapped[int | None] = mapped_column(Integer)
    survey_comment: Mapped[str | None] = mapped_column(CleanText)

    articles: Mapped[list[Article]] = relationship(
        back_populates="ticket", order_by="Article.id", cascade="all, delete-orphan"
    )
    participants: Mapped[list[Participant]] = relationship(
        back_populates="ticket", order_by="Participant.id", cascade="all, delete-orphan"
    )
    events: Mapped[list[Event]] = relationship(
        back_populates="ticket", order_by="Event.id", cascade="all, delete-orphan"
    )


class Article(Base):
    """One message on a ticket: a customer's mail, our answer, or an internal note."""

    __tablename__ = "articles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    message_id: Mapped[str | None] = mapped_column(CleanString(998))
    content_digest: Mapped[str | None] = mapped_column(String(64))
    # "<Message-ID or ''>|<content digest>" for inbound mail: one article per message.
    # Over-long Message-IDs are hashed (tickets.inbox.bounded_id): at most 1100 bytes.
    dedupe_key: Mapped[str | None] = mapped_column(CleanString(1100), unique=True)
    raw_message_id: Mapped[int | None] = mapped_column(ForeignKey("raw_messages.id"))
    from_addr: Mapped[str | None] = mapped_column(CleanString(320))
    from_name: Mapped[str | None] = mapped_column(CleanText)
    to_addrs: Mapped[list[Any]] = mapped_column(default=list)
    cc_addrs: Mapped[list[Any]] = mapped_column(default=list)
    subject: Mapped[str] = mapped_column(CleanText, default="")
    text: Mapped[str] = mapped_column(CleanText, default="")
    html: Mapped[str | None] = mapped_column(CleanText)
    new_text: Mapped[str] = mapped_column(CleanText, default="")
    author: Mapped[str | None] = mapped_column(String(320))  # agent for outbound/notes
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    ticket: Mapped[Ticket] = relationship(back_populates="articles")
    attachments: Mapped[list[AttachmentFile]] = relationship(
        back_populates="article", order_by="AttachmentFile.id", cascade="all, delete-orphan"
    )

    __table_args__ = (
        Index("ix_articles_message_id", "message_id"),
        # "Has this address ever written to us?" (notifier.recipients, backscatter).
        Index("ix_articles_from_addr", "from_addr"),
    )


class AttachmentFile(Base):
    """Metadata of an attachment; the bytes live on disk under their SHA-256."""

    __tablename__ = "attachments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    article_id: Mapped[int] = mapped_column(ForeignKey("articles.id"), index=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    filename: Mapped[str] = mapped_column(CleanString(255))
    content_type: Mapped[str] = mapped_column(CleanString(255))
    size: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    inline: Mapped[bool] = mapped_column(Boolean, default=False)
    content_id: Mapped[str | None] = mapped_column(CleanString(998))

    article: Mapped[Article] = relationship(back_populates="attachments")


class Participant(Base):
    __tablename__ = "participants"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    email: Mapped[str] = mapped_column(CleanString(320), index=True)
    name: Mapped[str] = mapped_column(CleanText, default="")
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    ticket: Mapped[Ticket] = relationship(back_populates="participants")

    __table_args__ = (UniqueConstraint("ticket_id", "email", name="ux_participants_ticket_email"),)


class Event(Base):
    """The ticket's history: what changed, from what to what, by whom, when."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    kind: Mapped[str] = mapped_column(String(40))
    field: Mapped[str | None] = mapped_column(String(40))
    old_value: Mapped[str | None] = mapped_column(CleanText)
    new_value: Mapped[str | None] = mapped_column(CleanText)
    actor: Mapped[str] = mapped_column(CleanString(320))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Makes one-off events (an SLA breach, an escalation tier) unique per ticket.
    once_key: Mapped[str | None] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)

    ticket: Mapped[Ticket] = relationship(back_populates="events")

    __table_args__ = (UniqueConstraint("ticket_id", "once_key", name="ux_events_once"),)


class MailAddress(Base):
    """What we know of an address across tickets: is it bouncing?"""

    __tablename__ = "mail_addresses"

    email: Mapped[str] = mapped_column(String(320), primary_key=True)
    bouncing: Mapped[bool] = mapped_column(Boolean, default=False)
    bounce_reason: Mapped[str | None] = mapped_column(Text)
    bounced_at: Mapped[datetime | None]


class OutboxMessage(Base):
    """One outbound mail, written with the change that caused it; delivery is separate."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"), index=True)
    article_id: Mapped[int | None] = mapped_column(ForeignKey("articles.id"))
    kind: Mapped[str] = mapped_column(String(32))
    message_id: Mapped[str] = mapped_column(String(998), unique=True)
    mail_from: Mapped[str] = mapped_column(String(320))
    recipients: Mapped[list[Any]] = mapped_column(default=list)
    # The mail as bytes (rows written before 0005, and mail built whole), or its plan,
    # which the delivery pass renders and serialises (notifier.planned).
    raw: Mapped[bytes | None] = mapped_column(LargeBinary)
    plan: Mapped[dict[str, Any] | None]
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending/sent/failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    claimed_until: Mapped[datetime | None]
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_outbox_state_next", "state", "next_attempt_at"),)


class OutboxRecipient(Base):
    """One row per recipient of an automatic mail: the send budget counts these."""

    __tablename__ = "outbox_recipients"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    outbox_id: Mapped[int] = mapped_column(ForeignKey("outbox.id"), index=True)
    email: Mapped[str] = mapped_column(String(320))
    ticket_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_outbox_recipients_email_at", "email", "created_at"),)


class ImapMailboxState(Base):
    """Where the poller got to in one mailbox, and who holds it."""

    __tablename__ = "imap_mailboxes"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    uidvalidity: Mapped[int | None] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger, default=0)
    last_success_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    token_refreshed_at: Mapped[datetime | None]


class Lease(Base):
    """A named lease with expiry: one holder at a time across instances."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime]


class Job(Base):
    """Last run of a scheduled job (observability; correctness relies on once_key)."""

    __tablename__ = "jobs"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    last_run_at: Mapped[datetime | None]
    last_ok_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)


class ApiToken(Base):
    """A per-agent API token: only its SHA-256 is kept (the token is shown once)."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    agent: Mapped[str] = mapped_column(String(320), index=True)
    label: Mapped[str] = mapped_column(String(200), default="")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class AgentPassword(Base):
    """An agent's console password, hashed with argon2 (optional: sign-in links work
    without one)."""

    __tablename__ = "agent_passwords"

    agent: Mapped[str] = mapped_column(String(320), primary_key=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class SignInLink(Base):
    """A one-time console sign-in link sent by mail: its token's SHA-256, until used."""

    __tablename__ = "sign_in_links"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    agent: Mapped[str] = mapped_column(String(320), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class ConsoleSession(Base):
    """A signed-in console session (the cookie carries the token; only its hash is here)."""

    __tablename__ = "console_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    agent: Mapped[str] = mapped_column(String(320), index=True)
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class WebhookDelivery(Base):
    """One ticket event for one configured webhook, written in the change's transaction
    (like the outbox) and delivered at least once; `idempotency_key` lets the receiver
    drop a repeat."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hook: Mapped[str] = mapped_column(String(100))
    event: Mapped[str] = mapped_column(String(40))
    ticket_id: Mapped[int | None] = mapped_column(Integer, index=True)
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    payload: Mapped[str] = mapped_column(Text)  # the exact JSON body that is signed
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending/sent/dead
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    claimed_until: Mapped[datetime | None]
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_webhook_deliveries_state_next", "state", "next_attempt_at"),)
