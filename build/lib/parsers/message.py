"""The typed result of parsing one raw email: what every later stage reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class MailKind(StrEnum):
    """What sort of mail this is, for loop prevention (RFC 3834)."""

    PERSON = "person"  # written by a human: may open or reopen tickets
    AUTO_REPLY = "auto_reply"  # out-of-office, vacation, autoresponder
    BOUNCE = "bounce"  # delivery-status notification, MAILER-DAEMON
    LIST = "list"  # mailing list / bulk traffic


@dataclass(frozen=True, slots=True)
class Address:
    """A mailbox: the address is normalised (domain lower-cased, no angle brackets)."""

    email: str
    name: str = ""


@dataclass(frozen=True, slots=True)
class Attachment:
    """One attachment. `filename` is already sanitised (never a path)."""

    filename: str
    content_type: str
    payload: bytes
    inline: bool = False
    content_id: str | None = None

    @property
    def size(self) -> int:
        return len(self.payload)


@dataclass(frozen=True, slots=True)
class DeliveryFailure:
    """One recipient reported by a delivery-status notification."""

    recipient: str
    status: str  # RFC 3464 status, e.g. "5.1.1"; "" when unknown
    permanent: bool
    diagnostic: str = ""


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    message_id: str | None  # without angle brackets; None when absent
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    subject: str
    date: datetime | None  # timezone-aware UTC
    from_addr: Address | None
    reply_to: tuple[Address, ...]
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    delivered_to: tuple[str, ...]
    text: str  # whole text body (text/plain preferred, else HTML converted)
    html: str | None
    new_text: str  # the new part of a reply: quotes and signature removed
    attachments: tuple[Attachment, ...]
    kind: MailKind
    kind_reason: str  # why it was classified so ("Auto-Submitted: auto-replied", ...)
    language: str | None  # "es" / "en" when it can be told, else None
    content_digest: str  # sha256 hex of what a human reads; ignores transport headers
    dsn_original_message_id: str | None = None  # for bounces: the Message-ID reported on
    delivery_failures: tuple[DeliveryFailure, ...] = ()
    defects: tuple[str, ...] = field(default_factory=tuple)

    @property
    def is_automatic(self) -> bool:
        return self.kind is not MailKind.PERSON
