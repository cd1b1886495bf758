"""Which addresses are ours, and which of the others bounce: one rule each."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.orm import Session

from tickets.models import MailAddress, utcnow


def base_address(email: str) -> str:
    """The address without its plus tag, lower-cased: `soporte+t1@x` → `soporte@x`."""
    local, _, domain = email.strip().lower().partition("@")
    return f"{local.split('+', 1)[0]}@{domain}"


def is_own(email: str, own: Iterable[str], domains: Iterable[str] = ()) -> bool:
    """One of our support addresses or aliases (plus tags included), or any address at
    one of `domains`. Staff routing passes no domains on purpose: agents often share the
    support domain and must still be mailed."""
    base = base_address(email)
    return base in own or base.partition("@")[2] in domains


def mark_bouncing(session: Session, email: str, reason: str) -> None:
    email = email.strip().lower()
    if "@" not in email:
        return
    address = session.get(MailAddress, email) or MailAddress(email=email)
    address.bouncing = True
    address.bounce_reason = reason[:1000]
    address.bounced_at = utcnow()
    session.add(address)
