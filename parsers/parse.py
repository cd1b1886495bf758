"""raw bytes → ParsedMessage. Pure: no I/O. Never raises: what cannot be read becomes a defect."""

from __future__ import annotations

import hashlib
import re
from email.errors import MissingHeaderBodySeparatorDefect
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32

from parsers import dsn
from parsers.charsets import decode_bytes
from parsers.classify import classify
from parsers.digest import content_digest
from parsers.headers import (
    addresses,
    decode_subject,
    first_value,
    message_ids,
    parse_date,
    plain_emails,
    raw_values,
    sender,
)
from parsers.htmltext import html_to_text
from parsers.language import guess_language
from parsers.message import Limits, MailKind, ParsedMessage
from parsers.mime import MimeContent, walk
from parsers.reply import strip_reply
from parsers.runs import message_factory, shrink
from parsers.verdicts import SpamRules, spam_reason

# compat32 on purpose: the modern policy parses header values lazily and raises on malformed
# ones when they are read; here every header is decoded by parsers.headers, defensively.
_POLICY = compat32
_HEADER_LINE = re.compile(rb"^[!-9;-~]+[ \t]*:")
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_DELIMITER = b"\n--"  # how every MIME boundary line begins
# A text/plain alternative this short, or a short one that points at the HTML version, is a
# stub when the HTML part says at least _STUB_RATIO times as much.
_STUB_MAX_WORDS = 4
_STUB_POINTER_MAX_WORDS = 40
_STUB_RATIO = 3
_STUB_MIN_HTML_WORDS = 12
_LINK_TARGET = re.compile(r"\]\([^)]*\)|https?://\S+")  # html2text's "[label](url)" targets
_STUB_POINTER = re.compile(
    r"\b(?:view|read|open|see|display)\w*\b.{0,40}\b(?:browser|navegador|html|web ?version|"
    r"online)\b|\b(?:html|rich[- ]text)\b.{0,40}\b(?:client|reader|viewer|capable|enabled)\b|"
    r"\bver (?:este|el) (?:correo|mensaje|bolet[ií]n)\b|versi[oó]n (?:web|html|en l[ií]nea)",
    re.IGNORECASE | re.DOTALL,
)


def parse(raw: bytes, limits: Limits | None = None, spam: SpamRules | None = None) -> ParsedMessage:
    limits = limits or Limits()
    defects: list[str] = []
    data = _as_bytes(raw, defects)
    try:
        return _parse(data, defects, limits, spam or SpamRules())
    except Exception as exc:  # the ingest boundary: a bad mail is data, never a crash
        defects.append(f"parser failure ({type(exc).__name__}); raw text kept as body")
        return _unparsed(data, defects)


def _as_bytes(raw: object, defects: list[str]) -> bytes:
    if isinstance(raw, bytes):
        return raw
    if isinstance(raw, str):
        defects.append("input was str, not bytes")
        return raw.encode("utf-8", "surrogateescape")
    try:
        return bytes(raw)  # type: ignore[call-overload,no-any-return]  # bytearray, memoryview
    except (TypeError, ValueError):
        defects.append(f"input of type {type(raw).__name__} is not bytes")
        return b""


def _parse(raw: bytes, defects: list[str], limits: Limits, spam: SpamRules) -> ParsedMessage:
    if not raw or raw.isspace():  # as `not raw.strip()`, without copying the mail
        defects.append("empty input")
    msg = _read_message(_within_part_limit(raw, limits, defects), defects)
    content = walk(msg, limits)
    defects.extend(content.defects)
    subject = decode_subject(msg, defects)
    from_addr = sender(msg, defects)
    text, html = _body(content, defects)
    kind, kind_reason = classify(msg, subject, text)
    bounce = kind is MailKind.BOUNCE
    date_header = first_value(msg, "date")
    new_text = strip_reply(text)
    return ParsedMessage(
        message_id=next(iter(_ids(msg, "message-id")), None),
        in_reply_to=_ids(msg, "in-reply-to"),
        references=_ids(msg, "references"),
        subject=subject,
        date=parse_date(date_header, defects),
        from_addr=from_addr,
        reply_to=addresses(msg, "reply-to", defects),
        to=addresses(msg, "to", defects),
        cc=addresses(msg, "cc", defects),
        delivered_to=_delivered_to(msg, defects),
        text=text,
        html=html,
        new_text=new_text,
        attachments=tuple(content.attachments),
        kind=kind,
        kind_reason=kind_reason,
        language=guess_language(first_value(msg, "content-language"), new_text),
        content_digest=content_digest(from_addr, subject, date_header, text, content.attachments),
        dsn_original_message_id=dsn.original_message_id(msg, text) if bounce else None,
        delivery_failures=dsn.delivery_failures(msg) if bounce else (),
        defects=tuple(dict.fromkeys(defects)),
        spam_reason=spam_reason(msg, spam),
    )


def _within_part_limit(raw: bytes, limits: Limits, defects: list[str]) -> bytes:
    """The stdlib parser builds every part before we can count them (100,000 parts take
    seconds): past about `max_parts` delimiter lines, only the bytes before are parsed."""
    delimiters = 0
    at = raw.find(_DELIMITER)
    while at != -1:
        delimiters += 1
        if delimiters > limits.max_parts + 1:
            defects.append(f"more than {limits.max_parts} MIME parts; rest ignored")
            return raw[: at + 1]
        at = raw.find(_DELIMITER, at + 1)
    return raw


def _read_message(raw: bytes, defects: list[str]) -> Message:
    # Big base64 bodies stay out of the stdlib parser (parsers.runs): its parts read them
    # back from `raw` when asked.
    shrunk, runs = shrink(raw)
    parser = BytesParser(message_factory(runs), policy=_POLICY)
    msg = parser.parsebytes(shrunk)
    if not any(isinstance(d, MissingHeaderBodySeparatorDefect) for d in msg.defects):
        return msg
    # One junk line inside the header block makes the stdlib treat every later header as
    # body text; dropping such lines keeps Subject, Date and MIME structure readable.
    repaired = _drop_junk_header_lines(shrunk)
    if repaired is None:
        return msg
    defects.append("malformed header line dropped")
    return parser.parsebytes(repaired)


def _drop_junk_header_lines(raw: bytes) -> bytes | None:
    head, separator, body = _split_header_block(raw)
    lines = head.splitlines(keepends=True)
    kept = [line for index, line in enumerate(lines) if _is_header_line(line, first=index == 0)]
    if len(kept) == len(lines) or not any(_HEADER_LINE.match(line) for line in kept[1:]):
        return None
    return b"".join(kept) + separator + body


def _is_header_line(line: bytes, *, first: bool) -> bool:
    folded = line[:1] in (b" ", b"\t")
    unix_from = first and line.startswith(b"From ")  # mbox separator, which the parser skips
    return bool(_HEADER_LINE.match(line)) or folded or unix_from


def _split_header_block(raw: bytes) -> tuple[bytes, bytes, bytes]:
    match = _BLANK_LINE.search(raw)
    if match is None:
        return raw, b"", b""
    return raw[: match.start()], raw[match.start() : match.end()], raw[match.end() :]


def _body(content: MimeContent, defects: list[str]) -> tuple[str, str | None]:
    html = "\n".join(content.html) if content.html else None
    plain = "\n\n".join(part.strip("\r\n") for part in content.plain if part.strip())
    text = plain or (html_to_text(html, defects) if html else "")
    if plain and html and _is_stub(plain):
        html_text = html_to_text(html, defects)
        html_words = len(_LINK_TARGET.sub(" ", html_text).split())
        if html_words >= max(_STUB_MIN_HTML_WORDS, _STUB_RATIO * len(plain.split())):
            defects.append("text/plain part is a stub; text taken from the HTML part")
            text = html_text
    return text.replace("\r\n", "\n").replace("\r", "\n"), html


def _is_stub(plain: str) -> bool:
    """A text/plain alternative that only points at the HTML ("view it in a browser")."""
    words = plain.split()
    return len(words) <= _STUB_MAX_WORDS or (
        len(words) <= _STUB_POINTER_MAX_WORDS and bool(_STUB_POINTER.search(plain))
    )


def _ids(msg: Message, name: str) -> tuple[str, ...]:
    found = [token for value in raw_values(msg, name) for token in message_ids(value)]
    return tuple(dict.fromkeys(found))


def _delivered_to(msg: Message, defects: list[str]) -> tuple[str, ...]:
    emails = [
        *plain_emails(msg, "delivered-to", defects),
        *plain_emails(msg, "x-original-to", defects),
    ]
    return tuple(dict.fromkeys(emails))


def _unparsed(raw: bytes, defects: list[str]) -> ParsedMessage:
    """Last resort when the MIME parser itself failed: the bytes as text, nothing inferred."""
    text, _ = decode_bytes(raw)
    return ParsedMessage(
        message_id=None,
        in_reply_to=(),
        references=(),
        subject="",
        date=None,
        from_addr=None,
        reply_to=(),
        to=(),
        cc=(),
        delivered_to=(),
        text=text,
        html=None,
        new_text=text,
        attachments=(),
        kind=MailKind.PERSON,
        kind_reason="unparseable; not classified",
        language=None,
        content_digest=hashlib.sha256(raw).hexdigest(),
        defects=tuple(dict.fromkeys(defects)),
    )
