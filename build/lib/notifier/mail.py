"""One outbound mail about a ticket, customer or staff alike: its subject and
Message-ID, the outbox row and the history event, inside a savepoint.

Both pipelines (`notify` for customers, `sla_mail` for staff) decide who hears what and
render it; the steps every mail shares live here once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage

from sqlalchemy.orm import Session

from notifier.outbox import enqueue
from parsers.thread_keys import make_message_id, subject_tag
from tickets.errors import describe
from tickets.lifecycle import record
from tickets.models import Ticket

log = logging.getLogger("buzon.notify")

ACTOR = "buzon-notifier"


@dataclass(frozen=True)
class Queued:
    """What was done for one ticket's mail (the CLI reports it)."""

    ticket_id: int
    kind: str
    outbox_id: int | None
    recipients: tuple[str, ...]
    refused: tuple[tuple[str, str], ...] = field(default=())


@dataclass(frozen=True)
class Identity:
    """The subject and the signed Message-ID of one mail about a ticket."""

    subject: str
    message_id: str


def identify(ticket: Ticket, rendered_subject: str, tag_format: str, secret: bytes,
             domain: str) -> Identity:  # fmt: skip
    """The ticket tag leads the subject unless the template already placed it."""
    tag = subject_tag(tag_format, ticket.id)
    subject = rendered_subject if tag in rendered_subject else f"{tag} {rendered_subject}"
    return Identity(subject, make_message_id(secret, ticket.id, domain))


def queue_mail(
    session: Session,
    ticket: Ticket,
    message: EmailMessage,
    *,
    kind: str,
    message_id: str,
    mail_from: str,
    recipients: Sequence[str],
    article_id: int | None,
    automatic: bool,
    now: datetime,
    refused: tuple[tuple[str, str], ...] = (),
    internal: bool = False,
) -> Queued:
    """Write the outbox row and the "notified" event that says so on the ticket."""
    row = enqueue(
        session,
        message,
        message_id=message_id,
        kind=kind,
        mail_from=mail_from,
        recipients=list(recipients),
        ticket_id=ticket.id,
        article_id=article_id,
        automatic=automatic,
        now=now,
    )
    extra = {"internal": True} if internal else {}
    record(
        session, ticket, "notified", ACTOR, field="mail", new=kind, outbox=row.id,
        recipients=list(recipients), at=now, **extra,
    )  # fmt: skip
    log.info(
        "queued ticket=%s kind=%s outbox=%s recipients=%d", ticket.id, kind, row.id,
        len(recipients),
    )  # fmt: skip
    return Queued(ticket.id, kind, row.id, tuple(recipients), refused)


def safely(
    session: Session, ticket: Ticket, kind: str, build: Callable[[], Queued]
) -> Queued | None:
    """Run `build` in a savepoint: a broken template must lose neither the change that
    caused the mail nor the customer's article; the failure is recorded on the ticket."""
    try:
        with session.begin_nested():
            return build()
    except Exception as exc:  # noqa: BLE001 - recorded, never silent
        error = describe(exc)
        log.error("notification failed ticket=%s kind=%s: %s", ticket.id, kind, error)
        record(session, ticket, "notify_error", ACTOR, field="mail", new=kind, error=error)
        return None
