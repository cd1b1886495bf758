"""Keys that tie a mail to a ticket: signed Message-IDs, signed plus-address tokens and
subject tags. Pure functions; the secret comes from the caller."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

_REPLY_PREFIX = re.compile(
    r"^\s*(?:(?:re|rv|fw|fwd|aw|sv|wg|antw|enc|tr|r|odp|vs|ref)\s*(?:\[\d+\]|\(\d+\))?\s*[:：]\s*)+",
    re.IGNORECASE,
)
_OUR_MID = re.compile(r"^buzon\.(\d+)\.([0-9a-z]+)\.([0-9a-f]{20})@", re.IGNORECASE)
_TOKEN = re.compile(r"^(\d+)\.([0-9a-f]{12})$")


def _sign(secret: bytes, text: str, length: int) -> str:
    return hmac.new(secret, text.encode(), hashlib.sha256).hexdigest()[:length]


def make_message_id(secret: bytes, ticket_id: int, domain: str) -> str:
    """A Message-ID of ours (without brackets) that names its ticket and cannot be forged."""
    nonce = secrets.token_hex(8)
    return f"buzon.{ticket_id}.{nonce}.{_sign(secret, f'{ticket_id}.{nonce}', 20)}@{domain}"


def ticket_from_message_id(secret: bytes, message_id: str) -> int | None:
    """The ticket named by one of our Message-IDs, or None (not ours, or forged)."""
    match = _OUR_MID.match(message_id)
    if not match:
        return None
    ticket, nonce, signature = match.groups()
    expected = _sign(secret, f"{int(ticket)}.{nonce.lower()}", 20)
    return int(ticket) if hmac.compare_digest(signature.lower(), expected) else None


def looks_like_ours(message_id: str) -> bool:
    return _OUR_MID.match(message_id) is not None


def reply_token(secret: bytes, ticket_id: int) -> str:
    return f"{ticket_id}.{_sign(secret, f'token.{ticket_id}', 12)}"


def plus_address(address: str, secret: bytes, ticket_id: int) -> str:
    """soporte@x → soporte+123.<signature>@x: a reply to it reaches ticket 123 only."""
    local, _, domain = address.partition("@")
    return f"{local}+{reply_token(secret, ticket_id)}@{domain}"


def ticket_from_address(secret: bytes, address: str) -> int | None:
    local = address.partition("@")[0]
    if "+" not in local:
        return None
    match = _TOKEN.match(local.split("+", 1)[1].lower())
    if not match:
        return None
    ticket = int(match.group(1))
    return ticket if hmac.compare_digest(reply_token(secret, ticket), match.group(0)) else None


def subject_tag(tag_format: str, ticket_id: int) -> str:
    return tag_format.replace("{number}", str(ticket_id))


def _tag_pattern(tag_format: str) -> re.Pattern[str]:
    before, _, after = tag_format.partition("{number}")
    # Clients and people add spaces inside brackets; be tolerant of that only.
    loose = r"\s*".join(re.escape(c) for c in before.strip())
    tail = r"\s*".join(re.escape(c) for c in after.strip())
    return re.compile(loose + r"\s*(\d{1,12})\s*" + tail, re.IGNORECASE)


def ticket_from_subject(tag_format: str, subject: str) -> int | None:
    match = _tag_pattern(tag_format).search(subject)
    return int(match.group(1)) if match else None


def strip_reply_prefixes(subject: str) -> str:
    """'RE: RV: Fwd: AW[2]: hola' → 'hola'."""
    return _REPLY_PREFIX.sub("", subject).strip()


def remove_tag(tag_format: str, subject: str) -> str:
    return re.sub(r"\s{2,}", " ", _tag_pattern(tag_format).sub("", subject)).strip()
