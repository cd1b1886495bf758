"""Agents' operations that take more than one desk call, shared by the CLI and the
HTTP API so that both do exactly the same: an answer with attachments, reprocessing
and releasing stored mail, putting failed outbound mail back in line, bouncing marks.

Errors are the domain's (`TicketError`, `OutboxError`); each interface words its own
success and maps the errors to an exit code or an HTTP status.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker

from tickets import actions, queries, shaping, webhooks
from tickets.addresses import clear_bouncing
from tickets.blobstore import BlobStore
from tickets.errors import TicketError, TicketNotFound, describe
from tickets.inbox import release_spam, reset_for_reprocess
from tickets.models import RawMessage, RawState, utcnow

if TYPE_CHECKING:  # `buzon tickets list` imports this module: not the desk's whole stack
    from daemon.desk import Acted, Desk
    from notifier.mail import Queued
    from tickets.ingest import Outcome

log = logging.getLogger("buzon.operations")


def reply(
    desk: Desk,
    blobs: BlobStore,
    expire_bouncing: Callable[[datetime], int],
    number: int,
    actor: str,
    text: str,
    files: Sequence[actions.NewAttachment] = (),
    status: str | None = None,
) -> Acted:
    """Answer the customer (and watchers) by mail, with attachments."""
    expire_bouncing(utcnow())  # an expired mark must not hold this answer back
    return desk.act(
        number,
        lambda s, t: actions.reply(
            s, t, actor, text, attachments=list(files), blobs=blobs, status=status
        ),
    )


def unsent(number: int, queued: list[Queued]) -> str | None:
    """Why an answer reaches nobody (one line naming who was skipped and why), or None
    when it was mailed: an error the agent must see, not a detail in parentheses."""
    if any(q.outbox_id is not None and q.recipients for q in queued):
        return None
    skipped = [f"{e} ({r})" for q in queued for e, r in q.refused]
    hint = ""
    if any(r == "bouncing" for q in queued for _, r in q.refused):
        hint = "; once the address works again: buzon addresses clear ADDRESS, then reply again"
    return (
        f"ticket #{number}: the reply is on the ticket but was mailed to nobody: "
        + (", ".join(skipped) or "no recipient")
        + hint
    )


def process(desk: Desk, raw_id: int) -> str:
    """The state a stored message ended in; `deferred` when the store could not say
    (the row stays in the queue for the ingest worker)."""
    try:
        return desk.ingest(raw_id).state
    except Exception as exc:  # noqa: BLE001 - one line, never the mail
        log.warning("raw message %s: processing deferred (%s)", raw_id, describe(exc))
        return "deferred"


def reprocess(sessions: sessionmaker[Session], desk: Desk, raw_id: int | None) -> Counter[str]:
    """Process message `raw_id` again, or (None) every failed and quarantined one: how
    many ended in each state."""
    with sessions() as session:
        if raw_id is not None and session.get(RawMessage, raw_id) is None:
            raise TicketNotFound(f"no raw message {raw_id}")
        ids = [raw_id] if raw_id is not None else queries.failed_raw_ids(session)
    reset_for_reprocess(sessions, ids)
    return Counter(process(desk, one) for one in ids)


def release(
    sessions: sessionmaker[Session], desk: Desk, raw_ids: Sequence[int]
) -> list[tuple[int, Outcome]]:
    """Not spam after all: the messages become tickets as if no filter had flagged
    them. All or none: an id not kept as spam refuses the lot."""
    with sessions() as session:
        spam = queries.raw_ids_in_state(session, list(raw_ids), RawState.SPAM)
    if not raw_ids or set(spam) != set(raw_ids):
        others = ", ".join(str(i) for i in raw_ids if i not in spam)
        raise TicketError(f"not kept as spam: {others} (see `buzon inbound list --state spam`)")
    release_spam(sessions, spam)
    return [(raw_id, desk.ingest(raw_id)) for raw_id in spam]


def retry_outbox(sessions: sessionmaker[Session], outbox_id: int, now: datetime) -> None:
    """Put a failed mail back in line; the next delivery pass sends it."""
    from notifier import outbox

    with sessions.begin() as session:
        outbox.retry(session, outbox_id, now)


def list_addresses(
    sessions: sessionmaker[Session],
    expire_bouncing: Callable[[datetime], int],
    *,
    bouncing: bool = False,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """Known addresses, latest bounce first; expired marks are lifted first so that the
    list never shows an address as bouncing that mail would already reach."""
    expire_bouncing(utcnow())
    with sessions() as session:
        return queries.list_addresses(session, bouncing=bouncing, limit=limit)


def clear_addresses(
    sessions: sessionmaker[Session], addresses: Sequence[str]
) -> tuple[list[str], list[str]]:
    """Lift the bouncing marks of `addresses`: (the ones lifted, the ones not marked)."""
    with sessions.begin() as session:
        cleared = clear_bouncing(session, addresses)
    unmarked = sorted({a.strip().lower() for a in addresses} - set(cleared))
    return cleared, unmarked


def retry_webhook(sessions: sessionmaker[Session], delivery_id: int, now: datetime) -> None:
    """Put a dead (or waiting) webhook delivery back in line, with fresh attempts."""
    with sessions.begin() as session:
        webhooks.retry(session, delivery_id, now)


def retry_dead_webhooks(sessions: sessionmaker[Session], now: datetime) -> int:
    """Every dead webhook delivery back in line; how many."""
    with sessions.begin() as session:
        return webhooks.retry_dead(session, now)


def create_ticket(
    desk: Desk,
    actor: str,
    *,
    requester: str,
    subject: str,
    text: str,
    cc: Sequence[str] = (),
    source: str = "phone",
    language: str = "es",
    acknowledge: bool = True,
) -> Acted:
    """Register a request that came by phone, chat or in person (the customer is sent an
    acknowledgement unless `acknowledge` is false); `changes[0].ticket_id` is its number."""
    return desk.change(
        lambda s: shaping.open_ticket(
            s,
            actor,
            requester=requester,
            subject=subject,
            text=text,
            cc=tuple(cc),
            source=source,
            language=language,
            acknowledge=acknowledge,
        )
    )
