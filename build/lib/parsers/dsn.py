"""Delivery-status notifications (RFC 3464): which recipients failed, and for which mail."""

from __future__ import annotations

import re
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32

from parsers.headers import first_value, message_ids, normalise_email, one_line, raw_values
from parsers.message import DeliveryFailure
from parsers.mime import part_bytes

_STATUS = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")
_FIELD = re.compile(r"^([A-Za-z][A-Za-z0-9-]*)[ \t]*:[ \t]*(.*)$")
# Non-standard bounces quote the original headers in their text; the first Message-ID wins.
_QUOTED_MESSAGE_ID = re.compile(
    r"^[ \t>|]*Message-ID[ \t]*:[ \t]*(.+)$", re.IGNORECASE | re.MULTILINE
)
_ORIGINAL_HEADER_TYPES = frozenset({"text/rfc822-headers", "message/rfc822-headers"})
_ORIGINAL_MESSAGE_TYPES = frozenset({"message/rfc822", "message/global"})


def is_delivery_report(msg: Message) -> bool:
    """multipart/report; report-type=delivery-status, or a message/delivery-status part."""
    if msg.get_content_type() == "multipart/report":
        report_type = str(msg.get_param("report-type") or "").strip().lower()
        if report_type in ("delivery-status", "global-delivery-status"):
            return True
    return any(_status_parts(msg))


def has_original_message(msg: Message) -> bool:
    return any(
        part.get_content_type() in _ORIGINAL_MESSAGE_TYPES | _ORIGINAL_HEADER_TYPES
        for part in msg.walk()
    )


def delivery_failures(msg: Message) -> tuple[DeliveryFailure, ...]:
    failures = [
        failure
        for part in _status_parts(msg)
        for block in _field_blocks(part_bytes(part).decode("utf-8", "replace"))
        if (failure := _failure(block)) is not None
    ]
    return tuple(failures) or _failed_recipients_header(msg)


def original_message_id(msg: Message, body_text: str) -> str | None:
    for part in msg.walk():
        ctype = part.get_content_type()
        headers: Message | None = None
        if ctype in _ORIGINAL_MESSAGE_TYPES and part.is_multipart():
            inner = part.get_payload()
            first = inner[0] if isinstance(inner, list) and inner else None
            headers = first if isinstance(first, Message) else None
        elif ctype in _ORIGINAL_HEADER_TYPES:
            headers = BytesParser(policy=compat32).parsebytes(part_bytes(part), headersonly=True)
        if headers is not None and (ids := message_ids(first_value(headers, "message-id"))):
            return ids[0]
    match = _QUOTED_MESSAGE_ID.search(body_text)
    ids = message_ids(match[1]) if match else ()
    return ids[0] if ids else None


def _status_parts(msg: Message) -> list[Message]:
    return [
        part
        for part in msg.walk()
        if part.get_content_type() in ("message/delivery-status", "message/global-delivery-status")
    ]


def _field_blocks(text: str) -> list[dict[str, str]]:
    """RFC 3464 field groups: header-like lines, groups separated by blank lines."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last = ""
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            if current:
                blocks.append(current)
            current, last = {}, ""
        elif line[0] in " \t" and last:
            current[last] += " " + line.strip()
        elif match := _FIELD.match(line):
            last = match[1].lower()
            current.setdefault(last, match[2].strip())
    if current:
        blocks.append(current)
    return blocks


def _failure(block: dict[str, str]) -> DeliveryFailure | None:
    recipient = _address_field(block.get("final-recipient") or block.get("original-recipient"))
    if recipient is None:
        return None
    action = block.get("action", "").strip().lower()
    found = _STATUS.search(block.get("status", ""))
    status = found[1] if found else ""
    if not (action.startswith("failed") or (not action and status.startswith("5"))):
        return None  # delayed, delivered, relayed, expanded: not a failure
    return DeliveryFailure(
        recipient=recipient,
        status=status,
        # "failed" without a status still means the MTA gave up for good.
        permanent=status.startswith("5") or not status,
        diagnostic=_typed_value(block.get("diagnostic-code", "")),
    )


def _address_field(value: str | None) -> str | None:
    if not value:
        return None
    return normalise_email(_typed_value(value))


def _typed_value(value: str) -> str:
    """Drop the RFC 3464 address/diagnostic type: "rfc822; a@b" → "a@b"."""
    kind, separator, rest = value.partition(";")
    return one_line(rest if separator and " " not in kind.strip() else value)


def _failed_recipients_header(msg: Message) -> tuple[DeliveryFailure, ...]:
    recipients = [
        email
        for value in raw_values(msg, "x-failed-recipients")
        for item in value.split(",")
        if (email := normalise_email(item)) is not None
    ]
    return tuple(
        DeliveryFailure(recipient=email, status="", permanent=True)
        for email in dict.fromkeys(recipients)
    )
