"""Builds one outbound mail: headers that thread, headers that stop loops, a UTF-8 body.

Nothing taken from a mail or a person reaches a header unchecked: control characters
are removed here, and `email.policy.SMTP` refuses CR/LF in any header value anyway
(belt and braces against header injection through a subject or a display name).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email import policy
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
# A Message-ID we may repeat in In-Reply-To/References: printable ASCII, no brackets.
_MESSAGE_ID = re.compile(r"^[!-;=?-~]{1,250}@[!-;=?-~]{1,250}$")
# The whole chain (invariant 8), bounded only against a runaway thread: past this, the
# first message and the latest ones, which is what every client threads by.
MAX_REFERENCES = 200

AUTO_REPLIED = "auto-replied"  # an answer to a customer's mail (the acknowledgement)
AUTO_GENERATED = "auto-generated"  # any other automatic mail (RFC 3834)


def header_text(value: str, limit: int = 500) -> str:
    """One line, no control characters: safe to put in a header."""
    return " ".join(_CONTROL.sub(" ", value).split())[:limit]


@dataclass(frozen=True)
class Mailbox:
    email: str
    name: str = ""

    def header(self) -> Address:
        local, _, domain = self.email.partition("@")
        return Address(display_name=header_text(self.name, 200), username=local, domain=domain)


@dataclass(frozen=True)
class Part:
    filename: str
    content_type: str
    payload: bytes


@dataclass(frozen=True)
class Draft:
    """Everything one mail says; `auto_submitted` None means a person wrote it."""

    subject: str
    body: str
    sender: Mailbox
    to: Sequence[Mailbox]
    cc: Sequence[Mailbox] = ()
    reply_to: Mailbox | None = None
    in_reply_to: str | None = None
    references: Sequence[str] = ()
    auto_submitted: str | None = AUTO_GENERATED
    language: str = "es"
    attachments: Sequence[Part] = field(default_factory=tuple)
    # Outlook groups a conversation by these two (see notifier.conversation).
    thread_topic: str | None = None
    thread_index: str | None = None


def thread_ids(ids: Sequence[str | None]) -> list[str]:
    """The usable Message-IDs, oldest first, without repeats, bounded in number."""
    seen: list[str] = []
    for mid in ids:
        if mid and _MESSAGE_ID.match(mid) and mid not in seen:
            seen.append(mid)
    if len(seen) > MAX_REFERENCES:
        seen = [seen[0], *seen[-(MAX_REFERENCES - 1) :]]
    return seen


def _set_subject(msg: EmailMessage, subject: str) -> None:
    """The subject, encoded so that every decoder reads it back exactly.

    The standard library's folder splits an encoded word at a space and loses that
    space (and mixes plain words with encoded ones, which some clients join with a
    double space): a non-ASCII subject is encoded whole, in encoded words of at most 76
    characters, and stored as it is (`set_raw`: no second folding).
    """
    if subject.isascii():
        msg["Subject"] = subject
        return
    encoded = Header(subject, "utf-8", header_name="Subject").encode(linesep="\r\n")
    msg.set_raw("Subject", encoded)


def compose(draft: Draft, message_id: str, now: datetime) -> EmailMessage:
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = draft.sender.header()
    msg["To"] = [m.header() for m in draft.to]
    if draft.cc:
        msg["Cc"] = [m.header() for m in draft.cc]
    if draft.reply_to is not None:
        msg["Reply-To"] = draft.reply_to.header()
    _set_subject(msg, header_text(draft.subject, 900))
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = f"<{message_id}>"
    if draft.in_reply_to and _MESSAGE_ID.match(draft.in_reply_to):
        msg["In-Reply-To"] = f"<{draft.in_reply_to}>"
    references = thread_ids(draft.references)
    if references:
        msg["References"] = " ".join(f"<{mid}>" for mid in references)
    if draft.thread_topic:
        msg["Thread-Topic"] = header_text(draft.thread_topic, 900)
    if draft.thread_index:
        msg["Thread-Index"] = draft.thread_index
    if draft.auto_submitted is not None:
        msg["Auto-Submitted"] = draft.auto_submitted
        # Exchange/Outlook: no out-of-office or other auto-answer to this mail.
        msg["X-Auto-Response-Suppress"] = "All"
    # Quoted-printable keeps accents intact through relays that are not 8BITMIME.
    msg.set_content(draft.body, charset="utf-8", cte="quoted-printable")
    msg["Content-Language"] = draft.language  # after set_content, which resets Content-*
    for part in draft.attachments:
        maintype, _, subtype = part.content_type.partition("/")
        if not maintype or not subtype:
            maintype, subtype = "application", "octet-stream"
        msg.add_attachment(
            part.payload,
            maintype=maintype,
            subtype=subtype,
            filename=header_text(part.filename, 200) or "adjunto",
        )
    return msg
