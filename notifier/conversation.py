"""One conversation per ticket in every mail client (DESIGN invariant 8).

Clients group mail differently: Thunderbird and mutt follow References (JWZ); Gmail
needs the same subject (less Re:/Fwd:) *and* References that overlap; Outlook groups by
the normalised subject (`Thread-Topic`) and the conversation GUID inside `Thread-Index`.
So every mail buzón sends about a ticket carries the same subject, `[#N] <subject>`
(with `Re: ` when it answers a person's mail), the same Thread-Topic, a Thread-Index
rooted in the ticket, and the whole References chain. Pure functions.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from datetime import UTC, datetime, timedelta

# FILETIME counts 100 ns intervals since 1601-01-01 (UTC).
_FILETIME_EPOCH = datetime(1601, 1, 1, tzinfo=UTC)
HEADER_BYTES = 22  # reserved byte + 5 bytes of FILETIME + 16 bytes of GUID
CHILD_BYTES = 5


def conversation_subject(tag: str, subject: str, *, answer: bool = False) -> str:
    """`[#N] subject`, or `Re: [#N] subject` for a mail that answers one."""
    topic = thread_topic(tag, subject)
    return f"Re: {topic}" if answer else topic


def thread_topic(tag: str, subject: str) -> str:
    """The normalised subject Outlook groups by: the same for every mail of the ticket."""
    return f"{tag} {' '.join(subject.split())}".strip()


def filetime(when: datetime) -> int:
    if when.tzinfo is None:  # stored times are naive UTC
        when = when.replace(tzinfo=UTC)
    delta = when - _FILETIME_EPOCH
    return (delta.days * 86_400 + delta.seconds) * 10_000_000 + delta.microseconds * 10


def conversation_guid(secret: bytes, ticket_id: int) -> bytes:
    """16 bytes naming the ticket's conversation; stable, and not guessable from outside."""
    return hmac.new(secret, f"thread-index.{ticket_id}".encode(), hashlib.sha256).digest()[:16]


def thread_root(created_at: datetime, guid: bytes) -> bytes:
    """The 22-byte header block (MS-OXOMSG PidTagConversationIndex): 0x01, then the five
    bytes that follow it in the big-endian FILETIME, then the GUID."""
    stamp = filetime(created_at).to_bytes(8, "big")
    return b"\x01" + stamp[1:6] + guid


def child_block(root_time: datetime, now: datetime, sequence: int = 0) -> bytes:
    """One 5-byte response block: the time since the root (31 bits of it), 4 random bits
    and a 4-bit sequence count."""
    delta = max(0, filetime(now) - filetime(root_time))
    if delta < 1 << 49:
        code, bits = 0, (delta >> 18) & 0x7FFFFFFF
    else:
        code, bits = 1, (delta >> 23) & 0x7FFFFFFF
    value = (code << 39) | (bits << 8) | (secrets.randbits(4) << 4) | (sequence & 0xF)
    return value.to_bytes(CHILD_BYTES, "big")


def thread_index(root: bytes, root_time: datetime, now: datetime) -> str:
    """The Thread-Index of one of our mails: the ticket's root plus one child block."""
    return base64.b64encode(root + child_block(root_time, now)).decode("ascii")


def parse_root(value: str | None) -> bytes | None:
    """The 22-byte root of a Thread-Index header, or None when it is not a valid one."""
    if not value:
        return None
    try:
        raw = base64.b64decode("".join(value.split()), validate=True)
    except ValueError:
        return None
    if len(raw) < HEADER_BYTES or (len(raw) - HEADER_BYTES) % CHILD_BYTES or raw[0] != 1:
        return None
    return raw[:HEADER_BYTES]


def root_time(root: bytes) -> datetime:
    """When a root block was made (to the 1.7 s its truncated FILETIME keeps)."""
    stamp = int.from_bytes(root[:6] + b"\x00\x00", "big")
    return _FILETIME_EPOCH + timedelta(microseconds=stamp // 10)
