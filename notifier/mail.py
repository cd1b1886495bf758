"""One outbound mail about a ticket, customer or staff alike: its subject and
Message-ID, the outbox row (with the mail's plan: `notifier.planned`) and the history
event, inside a savepoint.

Both pipelines (`notify` for customers, `sla_mail` for staff) decide who hears what and
render it; the steps every mail shares live here once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email import policy
from email.parser import BytesHeaderParser
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from notifier.conversation import (
    conversation_guid,
    conversation_subject,
    parse_root,
    root_time,
    thread_index,
    thread_root,
    thread_topic,
)
from notifier.outbox import enqueue
from parsers.thread_keys import make_message_id, subject_tag
from tickets.errors import describe
from tickets.ingest import HEADER_SPAN, opening_head
from tickets.lifecycle import record
from tickets.models import Article, ArticleKind, RawMessage, Ticket

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
    """The subject, the signed Message-ID and the Outlook thread headers of one mail."""

    subject: str
    message_id: str
    thread_topic: str
    thread_index: str


def identify(
    session: Session,
    ticket: Ticket,
    tag_format: str,
    secret: bytes,
    domain: str,
    now: datetime,
    *,
    answer: bool = False,
) -> Identity:
    """Every mail about a ticket: the ticket's one subject (`Re: ` when it answers a
    person's mail), one Thread-Topic, a Thread-Index rooted in the ticket."""
    tag = subject_tag(tag_format, ticket.id)
    root, root_at = _thread_root(session, ticket, secret)
    return Identity(
        conversation_subject(tag, ticket.subject, answer=answer),
        make_message_id(secret, ticket.id, domain),
        thread_topic(tag, ticket.subject),
        thread_index(root, root_at, now),
    )


def _thread_root(session: Session, ticket: Ticket, secret: bytes) -> tuple[bytes, datetime]:
    """The conversation root of the ticket: the customer's own (their first mail's
    Thread-Index, so Outlook files our answers under the mail they sent) or one derived
    from the ticket (its creation time and a GUID signed with our secret)."""
    # Opened by this very transaction, the ticket's first mail is in memory; else its
    # head is read (a large first mail is not read whole).
    head = opening_head(session, ticket)
    if head is None:
        head = session.scalar(
            select(func.substr(RawMessage.raw, 1, HEADER_SPAN))
            .join(Article, Article.raw_message_id == RawMessage.id)
            .where(Article.ticket_id == ticket.id, Article.kind == ArticleKind.INBOUND)
            .order_by(Article.id)
            .limit(1)
        )
    if head is not None:
        headers = BytesHeaderParser(policy=policy.compat32).parsebytes(_header_block(head))
        root = parse_root(str(headers.get("Thread-Index") or ""))
        if root is not None:
            return root, root_time(root)
    return thread_root(ticket.created_at, conversation_guid(secret, ticket.id)), ticket.created_at


def _header_block(head: bytes) -> bytes:
    """The mail's header lines alone: the parser is not walked through the body that
    follows them in the head (up to 64 KiB)."""
    head = bytes(head)
    # The first blank line ends them; the cut keeps the last header's line break.
    ends = [n + 2 for n in (head.find(b"\r\n\r\n"),) if n >= 0]
    ends += [n + 1 for n in (head.find(b"\n\n"),) if n >= 0]
    return head[: min(ends)] if ends else head


def queue_mail(
    session: Session,
    ticket: Ticket,
    plan: dict[str, Any],
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
    """Write the outbox row with the mail's `plan` and the "notified" event that says so
    on the ticket."""
    outbox_id = enqueue(
        session,
        plan=plan,
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
        session, ticket, "notified", ACTOR, field="mail", new=kind, outbox=outbox_id,
        recipients=list(recipients), at=now, **extra,
    )  # fmt: skip
    log.info(
        "queued ticket=%s kind=%s outbox=%s recipients=%d", ticket.id, kind, outbox_id,
        len(recipients),
    )  # fmt: skip
    return Queued(ticket.id, kind, outbox_id, tuple(recipients), refused)


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
