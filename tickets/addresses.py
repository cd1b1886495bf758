"""Which addresses are ours, and which of the others bounce: one rule each.

A bouncing mark (one 550 from the relay, or one bounce notice) stops mail to that
address. It is not forever: it expires (`outbound.bouncing_days`, applied by
`expire_bouncing` at every delivery pass), and it is cleared as soon as the address
proves alive: it writes to us (`clear_bouncing`, called by ingest for a person's mail),
a delivery to it succeeds (notifier.delivery), or ops clear it (`buzon addresses clear`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import update
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


def clear_bouncing(session: Session, emails: Iterable[str]) -> list[str]:
    """Lift the marks of `emails` (they wrote to us, or took a mail); the ones lifted.

    The reason and time of the last bounce are kept for `buzon addresses list`."""
    wanted = sorted({e.strip().lower() for e in emails if "@" in e})
    if not wanted:
        return []
    cleared = session.scalars(
        update(MailAddress)
        .where(MailAddress.email.in_(wanted), MailAddress.bouncing.is_(True))
        .values(bouncing=False)
        .returning(MailAddress.email)
        .execution_options(synchronize_session=False)
    )
    return sorted(cleared)


def expire_bouncing(session: Session, marked_before: datetime) -> int:
    """Lift every mark set before `marked_before` (now minus `outbound.bouncing_days`):
    a full mailbox or a mistyped domain is often fixed, and the customer must hear from
    us again. A new bounce marks the address again."""
    result = session.execute(
        update(MailAddress)
        .where(MailAddress.bouncing.is_(True), MailAddress.bounced_at < marked_before)
        .values(bouncing=False)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)
