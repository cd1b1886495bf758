"""Walk a MIME tree once: body text, HTML and attachments, without merging nested mails."""

from __future__ import annotations

import re
from contextlib import suppress
from dataclasses import dataclass, field, replace
from email.generator import BytesGenerator
from email.message import Message
from email.utils import collapse_rfc2231_value
from io import BytesIO
from weakref import WeakKeyDictionary

from parsers.charsets import decode_bytes, decode_words
from parsers.filenames import sanitise_filename
from parsers.headers import charset_hint, first_value, raw_values
from parsers.message import Attachment, Limits
from parsers.runs import RunMessage

_RAW_PARAM = {
    param: re.compile(rf'(?:^|;)\s*{param}\s*=\s*(?:"(?P<quoted>[^"]*)"|(?P<bare>[^;\s]+))', re.I)
    for param in ("filename", "name")
}
_ENCAPSULATED = frozenset({"message/rfc822", "message/global"})
_SERIALISED: WeakKeyDictionary[Message, bytes] = WeakKeyDictionary()


@dataclass
class MimeContent:
    plain: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)
    charset_hint: str | None = None  # for 8-bit file names sent without any charset
    limits: Limits = field(default_factory=Limits)
    parts: int = 0
    decoded: int = 0


def walk(msg: Message, limits: Limits | None = None) -> MimeContent:
    content = MimeContent(charset_hint=charset_hint(msg), limits=limits or Limits())
    _visit(msg, content, depth=0)
    content.attachments = unique_names(content.attachments)
    return content


def _visit(part: Message, content: MimeContent, depth: int) -> None:
    _visit_part(part, content, depth)
    # Read after the payload was decoded: decoding is what finds bad base64.
    content.defects.extend(type(defect).__name__ for defect in part.defects)


def _visit_part(part: Message, content: MimeContent, depth: int) -> None:
    if not _within_limits(content, depth):
        return
    ctype = part.get_content_type()
    encapsulated = ctype in _ENCAPSULATED or (ctype.startswith("message/") and part.is_multipart())
    if not encapsulated and part.is_multipart():
        for child in _children(part):
            _visit(child, content, depth + 1)
    elif not encapsulated and ctype.startswith("multipart/"):
        _broken_multipart(part, content)
    else:
        _leaf(part, ctype, encapsulated, content)


def _leaf(part: Message, ctype: str, encapsulated: bool, content: MimeContent) -> None:
    content.parts += 1
    if content.parts > content.limits.max_parts:
        content.defects.append(f"more than {content.limits.max_parts} MIME parts; rest ignored")
        return
    payload = part_bytes(part)
    if not _budget(content, payload):
        return
    if encapsulated:
        # A forwarded or bounced mail is a document of its own: keep it whole, never merge it.
        content.attachments.append(_attachment(part, payload, content.charset_hint))
    elif _is_body_text(part, ctype):
        text, defects = decode_bytes(payload, part.get_content_charset())
        content.defects.extend(defects)
        (content.plain if ctype == "text/plain" else content.html).append(text)
    else:
        if _is_inline_named_text(part, ctype, content):
            # Thunderbird's "attach inline" sends the only text as a named inline part: it is
            # both the body the person wrote and a file they attached.
            content.plain.append(decode_bytes(payload, part.get_content_charset())[0])
        content.attachments.append(_attachment(part, payload, content.charset_hint))


def _within_limits(content: MimeContent, depth: int) -> bool:
    """Deeper nesting (or, in `_leaf`, more parts) than the limits is an attack or a loop,
    not a mail a person wrote: what lies beyond stays in the raw message (a defect says so)."""
    limits = content.limits
    if depth > limits.max_depth:
        content.defects.append(f"MIME nesting too deep (over {limits.max_depth}); rest ignored")
        return False
    return True


def _budget(content: MimeContent, payload: bytes) -> bool:
    """Whether `payload` still fits the decoded-size budget of the whole mail."""
    content.decoded += len(payload)
    if content.decoded <= content.limits.max_decoded_bytes:
        return True
    content.defects.append(
        f"decoded content over {content.limits.max_decoded_bytes} bytes; rest ignored"
    )
    return False


def _broken_multipart(part: Message, content: MimeContent) -> None:
    """A multipart whose boundary never occurs: its bytes are text, never a file."""
    text, defects = decode_bytes(part_bytes(part), part.get_content_charset())
    content.defects.extend(defects)
    if text.strip():
        content.defects.append("multipart without its boundary read as text")
        content.plain.append(text)


def _is_inline_named_text(part: Message, ctype: str, content: MimeContent) -> bool:
    inline = part.get_content_disposition() == "inline"
    return ctype == "text/plain" and inline and not content.plain and not content.html


def _children(part: Message) -> list[Message]:
    payload = part.get_payload()
    if isinstance(payload, list):
        return [child for child in payload if isinstance(child, Message)]
    return []


def _is_body_text(part: Message, ctype: str) -> bool:
    if ctype not in ("text/plain", "text/html"):
        return False
    if part.get_content_disposition() == "attachment":
        return False
    return not part.get_filename()


def part_bytes(part: Message) -> bytes:
    """The decoded payload of a leaf, or the serialised content of a container part."""
    if part.is_multipart():
        # A delivery-status part is read twice (as an attachment, then for its failures),
        # and the generator is the slowest step of a bounce's parse: serialise it once.
        serialised = _SERIALISED.get(part)
        if serialised is None:
            serialised = _SERIALISED[part] = _serialise_children(part)
        return serialised
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


def _serialise_children(part: Message) -> bytes:
    chunks = []
    for child in _children(part):
        buffer = BytesIO()
        # The generator chokes on some broken trees; keep whatever it wrote before that.
        with suppress(Exception):
            BytesGenerator(buffer, mangle_from_=False, maxheaderlen=0).flatten(child)
        runs = child.runs if isinstance(child, RunMessage) else None
        chunks.append(buffer.getvalue() if runs is None else runs.expand(buffer.getvalue()))
    return b"\n".join(chunks)


def _attachment(part: Message, payload: bytes, hint: str | None) -> Attachment:
    ctype = part.get_content_type()
    content_id = _content_id(part)
    disposition = part.get_content_disposition()
    inline = disposition == "inline" or (disposition is None and content_id is not None)
    raw_name = _raw_filename(part, hint) or _encapsulated_subject(part, ctype)
    return Attachment(
        filename=sanitise_filename(raw_name, ctype),
        content_type=ctype,
        payload=payload,
        inline=inline,
        content_id=content_id,
    )


def _content_id(part: Message) -> str | None:
    values = raw_values(part, "content-id")
    cid = values[0].strip().strip("<>").strip() if values else ""
    return cid or None


def _raw_filename(part: Message, hint: str | None) -> str | None:
    try:
        # compat32 joins RFC 2231 continuations and applies their charset here.
        name = part.get_filename() or part.get_param("name")
    except Exception:  # malformed parameters: no name is better than no attachment
        return None
    if isinstance(name, tuple):  # an RFC 2231 triple get_param did not collapse
        name = collapse_rfc2231_value(name)
    if name and "\ufffd" in str(name):
        # compat32 hands raw 8-bit parameters back as U+FFFD: read the raw header instead.
        name = _raw_8bit_name(part, hint) or name
    return str(name) if name else None


def _raw_8bit_name(part: Message, hint: str | None) -> str | None:
    """A file name sent as raw 8-bit bytes, decoded as the message's own charset."""
    hint = part.get_content_charset() or hint
    for header, param in (("content-disposition", "filename"), ("content-type", "name")):
        for value in raw_values(part, header, hint):
            match = _RAW_PARAM[param].search(value)
            if match:
                return match["quoted"] if match["quoted"] is not None else match["bare"]
    return None


def _encapsulated_subject(part: Message, ctype: str) -> str | None:
    """An attached mail without a name is named after its subject, as mail clients do."""
    if ctype not in _ENCAPSULATED or not part.is_multipart():
        return None
    inner = _children(part)
    subject = decode_words(first_value(inner[0], "subject")) if inner else ""
    subject = " ".join(subject.split())
    return f"{subject}.eml" if subject else None


def unique_names(attachments: list[Attachment]) -> list[Attachment]:
    """Different attachments never share a name: "scan.pdf", "scan (2).pdf", ...

    Identical attachments (same name and bytes, e.g. a signature image sent twice) keep it.
    """
    seen: dict[str, bytes] = {}
    result = []
    for attachment in attachments:
        name = attachment.filename
        counter = 1
        while name.lower() in seen and seen[name.lower()] != attachment.payload:
            counter += 1
            name = numbered(attachment.filename, counter)
        seen.setdefault(name.lower(), attachment.payload)
        result.append(
            attachment if name == attachment.filename else replace(attachment, filename=name)
        )
    return result


def numbered(filename: str, counter: int) -> str:
    stem, dot, extension = filename.rpartition(".")
    if not dot or not stem:
        return f"{filename} ({counter})"
    return f"{stem} ({counter}).{extension}"
