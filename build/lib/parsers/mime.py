"""Walk a MIME tree once: body text, HTML and attachments, without merging nested mails."""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass, field
from email.generator import BytesGenerator
from email.message import Message
from io import BytesIO

from parsers.charsets import decode_bytes
from parsers.filenames import sanitise_filename
from parsers.headers import raw_values
from parsers.message import Attachment

MAX_DEPTH = 40  # deeper nesting is an attack or a loop, not a real mail
_ENCAPSULATED = frozenset({"message/rfc822", "message/global"})


@dataclass
class MimeContent:
    plain: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)


def walk(msg: Message) -> MimeContent:
    content = MimeContent()
    _visit(msg, content, depth=0)
    return content


def _visit(part: Message, content: MimeContent, depth: int) -> None:
    _visit_part(part, content, depth)
    # Read after the payload was decoded: decoding is what finds bad base64.
    content.defects.extend(type(defect).__name__ for defect in part.defects)


def _visit_part(part: Message, content: MimeContent, depth: int) -> None:
    if depth > MAX_DEPTH:
        content.defects.append("MIME nesting too deep; rest ignored")
        return
    ctype = part.get_content_type()
    if ctype in _ENCAPSULATED or (ctype.startswith("message/") and part.is_multipart()):
        # A forwarded or bounced mail is a document of its own: keep it whole, never merge it.
        content.attachments.append(_attachment(part, payload=part_bytes(part)))
    elif part.is_multipart():
        for child in _children(part):
            _visit(child, content, depth + 1)
    elif _is_body_text(part, ctype):
        text, defects = decode_bytes(part_bytes(part), part.get_content_charset())
        content.defects.extend(defects)
        (content.plain if ctype == "text/plain" else content.html).append(text)
    else:
        content.attachments.append(_attachment(part, payload=part_bytes(part)))


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
    if isinstance(part.get_payload(), list):
        return _serialise_children(part)
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


def _serialise_children(part: Message) -> bytes:
    chunks = []
    for child in _children(part):
        buffer = BytesIO()
        # The generator chokes on some broken trees; keep whatever it wrote before that.
        with suppress(Exception):
            BytesGenerator(buffer, mangle_from_=False, maxheaderlen=0).flatten(child)
        chunks.append(buffer.getvalue())
    return b"\n".join(chunks)


def _attachment(part: Message, payload: bytes) -> Attachment:
    ctype = part.get_content_type()
    content_id = _content_id(part)
    disposition = part.get_content_disposition()
    inline = disposition == "inline" or (disposition is None and content_id is not None)
    return Attachment(
        filename=sanitise_filename(_raw_filename(part), ctype),
        content_type=ctype,
        payload=payload,
        inline=inline,
        content_id=content_id,
    )


def _content_id(part: Message) -> str | None:
    values = raw_values(part, "content-id")
    cid = values[0].strip().strip("<>").strip() if values else ""
    return cid or None


def _raw_filename(part: Message) -> str | None:
    try:
        # compat32 joins RFC 2231 continuations and applies their charset here.
        name = part.get_filename() or part.get_param("name")
    except Exception:  # malformed parameters: no name is better than no attachment
        return None
    if isinstance(name, tuple):  # an RFC 2231 triple get_param did not collapse
        name = name[2]
    return str(name) if name else None
