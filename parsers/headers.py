"""Header values → normalised Python values: addresses, message ids, subject, date."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.message import Message
from email.parser import BytesHeaderParser
from email.utils import parsedate_to_datetime
from typing import Any
from weakref import WeakKeyDictionary

from parsers.charsets import codec_name, decode_words, header_text
from parsers.message import Address

_BRACKETED_ID = re.compile(r"<\s*([^<>\s]+)\s*>")
_HEADER_END = re.compile(rb"\r?\n\r?\n")
HEADER_LIMIT = 256 * 1024  # header blocks longer than this are read up to here
_HINT_MAX_PARTS = 200
_INDEXES: WeakKeyDictionary[Message, tuple[list[tuple[str, Any]], dict[str, list[str]]]] = (
    WeakKeyDictionary()
)
_ANGLE_ADDRESS = re.compile(r"<\s*([^<>\s]+)\s*>")
_SENDER_HEADERS = ("from", "reply-to", "sender", "return-path")
_WHITESPACE = re.compile(r"\s+")
# Deliberately loose: we only need something a mail server could route, not RFC 5321 pedantry.
_MAILBOX = re.compile(r"[^\s@<>()\[\],;:\"]+@[^\s@<>()\[\],;:\".]+(?:\.[^\s@<>()\[\],;:\".]+)*")


def raw_values(msg: Message, name: str, hint: str | None = None) -> list[str]:
    """Every value of header `name`, 8-bit bytes decoded, not yet RFC 2047-decoded.

    `raw_items()` bypasses the compat32 fetch policy, which would hand back `Header`
    objects for 8-bit values.
    """
    values = _by_name(msg).get(name.lower(), [])
    if all(value.isascii() for value in values):
        return values
    hint = hint or charset_hint(msg)
    return [header_text(value, hint) for value in values]


def _by_name(msg: Message) -> dict[str, list[str]]:
    """The message's header values by lower-cased name. Parsing reads some fifty header
    values per mail: indexing the header block once beats scanning it each time. The index
    is kept while the header block is the same list of the same items."""
    items = list(msg.raw_items())
    cached = _INDEXES.get(msg)
    if cached is not None and cached[0] == items:
        return cached[1]
    index: dict[str, list[str]] = {}
    for key, value in items:
        index.setdefault(key.lower(), []).append(str(value))
    _INDEXES[msg] = (items, index)
    return index


def charset_hint(msg: Message) -> str | None:
    """The first legacy charset the message declares for a part: raw 8-bit headers use it."""
    stack = [msg]
    for _ in range(_HINT_MAX_PARTS):  # iterative and bounded: nesting can be hostile
        if not stack:
            break
        part = stack.pop()
        label = part.get_content_charset()
        codec = codec_name(label)
        if codec is not None and codec not in ("ascii", "utf-8"):
            return label
        if part.is_multipart():  # a leaf's payload is not read: it may be a big one
            children = part.get_payload()
            stack.extend(reversed([child for child in children if isinstance(child, Message)]))
    return None


def first_value(msg: Message, name: str) -> str:
    values = raw_values(msg, name)
    return values[0] if values else ""


def one_line(text: str) -> str:
    """Collapse folding, CR/LF and runs of whitespace into single spaces."""
    return _WHITESPACE.sub(" ", text).strip()


def decode_subject(msg: Message, defects: list[str]) -> str:
    return one_line(decode_words(first_value(msg, "subject"), defects))


def addresses(msg: Message, name: str, defects: list[str]) -> tuple[Address, ...]:
    """All valid mailboxes in every `name` header, in order, without duplicates."""
    found: dict[str, Address] = {}
    for value in raw_values(msg, name):
        for address in _parse_address_list(value, name, defects):
            found.setdefault(address.email, address)
    return tuple(found.values())


def _parse_address_list(value: str, name: str, defects: list[str]) -> list[Address]:
    problems: list[dict[str, object]] = []
    from mailparser.utils import get_addresses  # here: importing mail-parser takes ~0.1 s

    pairs = get_addresses(one_line(value), defects=problems, decode_names=False)
    pairs = [pair for pair in pairs if pair[1]]
    for problem in problems:
        if not problem.get("recovered"):
            pairs.extend(_recover(str(problem.get("raw") or ""), name, defects))
    result = []
    for display, email in pairs:
        normalised = normalise_email(email)
        if normalised is None:
            defects.append(f"invalid address dropped from {name}")
            continue
        result.append(Address(email=normalised, name=one_line(decode_words(display, defects))))
    return result


def _recover(raw: str, name: str, defects: list[str]) -> list[tuple[str, str]]:
    """A mailbox mail-parser refused ("x@yahoo.com."), read again by the stdlib."""
    match = _ANGLE_ADDRESS.search(raw)
    email = match[1] if match else raw.strip()
    display = raw[: match.start()].strip().strip('"').strip() if match else ""
    if normalise_email(email) is None:
        defects.append(f"invalid address dropped from {name}")
        return []
    defects.append(f"malformed address repaired in {name}")
    return [(display, email)]


def normalise_email(value: str) -> str | None:
    """Lower-cased addr-spec without brackets, or None when it is not a mailbox."""
    email = value.strip().strip("<>").strip().lower()
    # "name@yahoo.com." is the fully qualified DNS form; mail servers route it as without.
    email = email.rstrip(".") if "@" in email else email
    return email if _MAILBOX.fullmatch(email) else None


def sender(msg: Message, defects: list[str]) -> Address | None:
    """From, or when From has no usable mailbox, Reply-To, Sender, then the envelope sender.

    `From: "Mark" <>` or a missing From is a person's mail all the same; peers open the
    ticket for whoever can be answered. The fallback is noted in `defects`.
    """
    for name in _SENDER_HEADERS:
        found = addresses(msg, name, defects)
        if found:
            if name != "from":
                defects.append(f"no usable From; sender taken from {name.title()}")
            return found[0]
    return None


def plain_emails(msg: Message, name: str, defects: list[str]) -> list[str]:
    return [address.email for address in addresses(msg, name, defects)]


def message_ids(value: str) -> tuple[str, ...]:
    """Ids without angle brackets; tolerates missing brackets and surrounding garbage."""
    ids = _BRACKETED_ID.findall(value)
    if not ids:
        # No brackets: a lone token is the id; among several, only things that look like ids.
        tokens = [token.strip("<>,;") for token in value.split()]
        ids = tokens if len(tokens) == 1 else [token for token in tokens if "@" in token]
    return tuple(dict.fromkeys(token for token in ids if token))


def header_thread_ids(raw: bytes | bytearray) -> tuple[str | None, tuple[str, ...]]:
    """The mail's own Message-ID and the ids it answers (In-Reply-To, References), read
    from the header block alone: cheap enough for intake, which must not parse the body."""
    end = _HEADER_END.search(raw, 0, HEADER_LIMIT)
    head = BytesHeaderParser().parsebytes(bytes(raw[: end.start() if end else HEADER_LIMIT]))
    own = message_ids(str(head.get("Message-ID", "")))
    answered = " ".join(
        str(v) for name in ("In-Reply-To", "References") for v in head.get_all(name, [])
    )
    return (own[0] if own else None), message_ids(answered)


def parse_date(value: str, defects: list[str]) -> datetime | None:
    """Aware UTC datetime, or None; mail-parser's RFC 5322 reader first, stdlib as fallback."""
    value = one_line(value)
    if not value:
        return None
    from mailparser.dates import parse_mail_date

    result = parse_mail_date(value)
    if isinstance(result.value, datetime):
        return result.value.astimezone(UTC)
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        defects.append("unparseable Date header")
        return None
    # parsedate gives naive datetimes for "-0000" (zone unknown); UTC is the only honest reading.
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
