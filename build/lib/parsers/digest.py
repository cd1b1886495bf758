"""A fingerprint of what a person reads, blind to the transport that delivered it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from parsers.message import Address, Attachment

_SEPARATOR = b"\x1f"  # unit separator: cannot occur in a normalised header, keeps fields apart


def content_digest(
    from_addr: Address | None,
    subject: str,
    date_header: str,
    text: str,
    attachments: Iterable[Attachment],
) -> str:
    """sha256 over From, Subject, the Date value, the body text and each attachment's sha256.

    Received, Return-Path, Delivered-To and the Message-ID stay out: the same mail via SMTP
    and IMAP must agree, and two mails that reuse a Message-ID must not.
    """
    fields = [
        from_addr.email if from_addr else "",
        subject,
        " ".join(date_header.split()),
        normalise_text(text),
        *(hashlib.sha256(attachment.payload).hexdigest() for attachment in attachments),
    ]
    joined = _SEPARATOR.join(field.encode("utf-8", "surrogatepass") for field in fields)
    return hashlib.sha256(joined).hexdigest()


def normalise_text(text: str) -> str:
    """Line endings unified, trailing whitespace and trailing blank lines dropped."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join(line.rstrip() for line in lines).strip("\n")
