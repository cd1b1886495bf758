"""From a stored raw message to tickets: the one path every intake shares.

`process` parses, dedupes, classifies, threads and applies, in one transaction; the
queue of stored messages it reads from is `tickets.inbox`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from parsers import Address, ParsedMessage, parse
from parsers.message import MailKind
from parsers.thread_keys import (
    looks_like_ours,
    remove_tag,
    strip_reply_prefixes,
    ticket_from_address,
    ticket_from_message_id,
    ticket_from_subject,
)
from tickets import agent_mail, survey
from tickets.addresses import mark_bouncing
from tickets.blobstore import BlobStore
from tickets.changes import Change, CustomerReplied, TicketCreated
from tickets.confirmation import confirms
from tickets.errors import TicketError, describe
from tickets.inbox import SessionFactory
from tickets.lifecycle import Status, change_status, record
from tickets.models import (
    Article,
    ArticleKind,
    AttachmentFile,
    OutboxMessage,
    Participant,
    ParticipantRole,
    RawMessage,
    RawState,
    Ticket,
    utcnow,
)
from tickets.policy import MailPolicy

log = logging.getLogger("buzon.ingest")

AfterApply = Callable[[Session, list[Change]], None]

NO_SUBJECT = "(sin asunto)"


@dataclass(frozen=True)
class Outcome:
    raw_id: int
    state: str
    ticket_id: int | None = None
    article_id: int | None = None
    reason: str | None = None
    changes: tuple[Change, ...] = field(default=())


# --- process ------------------------------------------------------------------------------


def process(
    sf: SessionFactory, policy: MailPolicy, raw_id: int, after_apply: AfterApply | None = None
) -> Outcome:
    """Parse and apply one stored message. Never raises for bad content: the row records it."""
    for attempt in range(2):
        try:
            return _process_once(sf, policy, raw_id, after_apply)
        except IntegrityError:
            # Another worker committed the same message a moment ago: the second pass
            # finds it as a duplicate.
            if attempt == 1:
                raise
        except OperationalError:
            raise  # the database is away: leave the row claimed, a later run retries
        except Exception as exc:
            return _record_failure(sf, policy, raw_id, exc)
    raise AssertionError("unreachable")


def _process_once(
    sf: SessionFactory, policy: MailPolicy, raw_id: int, after_apply: AfterApply | None
) -> Outcome:
    with sf.begin() as session:
        row = session.get(RawMessage, raw_id, with_for_update=True)
        if row is None:
            raise TicketError(f"no raw message {raw_id}")
        if row.state in (RawState.PROCESSED, RawState.IGNORED):
            return Outcome(raw_id, row.state, row.ticket_id, row.article_id, row.reason)
        parsed = parse(row.raw)
        row.message_id = (parsed.message_id or "")[:998] or None
        outcome = _apply(session, policy, row, parsed)
        row.state, row.reason = outcome.state, outcome.reason
        row.ticket_id, row.article_id = outcome.ticket_id, outcome.article_id
        row.processed_at = utcnow()
        row.attempts += 1
        if after_apply is not None and outcome.changes:
            after_apply(session, list(outcome.changes))
    log.info(
        "processed raw=%s state=%s ticket=%s reason=%s",
        raw_id,
        outcome.state,
        outcome.ticket_id,
        outcome.reason,
    )
    return outcome


def _record_failure(sf: SessionFactory, policy: MailPolicy, raw_id: int, exc: Exception) -> Outcome:
    error = describe(exc, 500)
    log.warning("process failed raw=%s error=%s", raw_id, error)
    with sf.begin() as session:
        row = session.get(RawMessage, raw_id)
        if row is None:
            raise TicketError(f"no raw message {raw_id}") from exc
        row.attempts += 1
        row.state = RawState.QUARANTINED if row.attempts >= policy.max_attempts else RawState.FAILED
        row.reason = error
        row.processed_at = utcnow()
        return Outcome(raw_id, row.state, reason=error)


# --- apply: decide what the message means -------------------------------------------------


def _apply(session: Session, policy: MailPolicy, row: RawMessage, msg: ParsedMessage) -> Outcome:
    dedupe_key = f"{msg.message_id or ''}|{msg.content_digest}"
    duplicate = session.scalar(select(Article).where(Article.dedupe_key == dedupe_key))
    if duplicate is not None:
        return Outcome(
            row.id,
            RawState.IGNORED,
            duplicate.ticket_id,
            duplicate.id,
            f"duplicate of article {duplicate.id}",
        )
    if msg.kind is MailKind.BOUNCE:
        return _apply_bounce(session, policy, row, msg)

    sender = _sender(policy, row, msg)
    if msg.is_automatic:
        ticket = _find_ticket(session, policy, msg, sender, row.envelope)
        return Outcome(
            row.id,
            RawState.IGNORED,
            ticket.id if ticket else None,
            reason=f"{msg.kind.value}: {msg.kind_reason}",
        )
    if sender is None:
        return Outcome(row.id, RawState.IGNORED, reason="no sender address to answer")
    binding = _agent_binding(policy, row, msg, sender)
    if binding is not None:  # an agent, bound by a signed agent reply address (invariant 9)
        return _apply_agent(session, policy, row, msg, binding, dedupe_key)
    if policy.is_own(sender.email):
        return Outcome(row.id, RawState.IGNORED, reason="sent from one of our own addresses")

    ticket = _find_ticket(session, policy, msg, sender, row.envelope)
    if ticket is not None and ticket.status != Status.CLOSED:
        session.refresh(ticket, with_for_update=True)  # no lost updates across workers
        return _apply_reply(session, policy, row, msg, sender, ticket, dedupe_key)
    if ticket is not None and (rating := survey.survey_rating(session, ticket, msg)) is not None:
        # An answer to the closing survey: kept on the closed ticket, no follow-up ticket.
        article = _add_article(session, policy, row, msg, ticket, sender, dedupe_key)
        survey.record_rating(session, ticket, rating, sender.email, article.id)
        return Outcome(row.id, RawState.PROCESSED, ticket.id, article.id, "survey answer")
    return _open_ticket(session, policy, row, msg, sender, dedupe_key, parent=ticket)


def _sender(policy: MailPolicy, row: RawMessage, msg: ParsedMessage) -> Address | None:
    if policy.honour_reply_to and msg.reply_to:
        return msg.reply_to[0]
    if msg.from_addr is not None:
        return msg.from_addr
    mail_from = str(row.envelope.get("mail_from") or "").strip().lower()
    return Address(mail_from) if "@" in mail_from else None


def _find_ticket(
    session: Session,
    policy: MailPolicy,
    msg: ParsedMessage,
    sender: Address | None,
    envelope: dict[str, Any],
) -> Ticket | None:
    """Conservative threading: our Message-IDs, known Message-IDs, a signed plus-address,
    then the subject tag (only from someone who belongs on the ticket)."""
    for mid in (*msg.in_reply_to, *reversed(msg.references)):
        ticket = _ticket_by_message_id(session, policy, mid)
        if ticket is not None:
            return ticket
    rcpts = [a.email for a in (*msg.to, *msg.cc)]
    rcpts += [*msg.delivered_to, *(envelope.get("rcpt_tos") or [])]
    for address in rcpts:
        number = ticket_from_address(policy.secret, address) if policy.is_own(address) else None
        if number is not None and (ticket := session.get(Ticket, number)) is not None:
            return ticket
    number = ticket_from_subject(policy.subject_tag, msg.subject)
    ticket = session.get(Ticket, number) if number is not None else None
    if ticket is None or sender is None:
        return None
    if not policy.tag_requires_participant or _belongs(session, policy, ticket, sender.email):
        return ticket
    log.info("subject tag of ticket=%s ignored: sender is not a participant", ticket.id)
    return None


def _ticket_by_message_id(session: Session, policy: MailPolicy, mid: str) -> Ticket | None:
    if looks_like_ours(mid):
        number = ticket_from_message_id(policy.secret, mid)
        return session.get(Ticket, number) if number is not None else None  # forged: ignore
    article = session.scalar(
        select(Article).where(Article.message_id == mid).order_by(Article.id).limit(1)
    )
    if article is not None:
        return article.ticket
    outbound = session.scalar(select(OutboxMessage).where(OutboxMessage.message_id == mid))
    if outbound is not None and outbound.ticket_id is not None:
        return session.get(Ticket, outbound.ticket_id)
    return None


def _belongs(session: Session, policy: MailPolicy, ticket: Ticket, email: str) -> bool:
    if policy.is_agent(email):
        return True
    return (
        session.scalar(
            select(Participant.id).where(
                Participant.ticket_id == ticket.id, Participant.email == email.lower()
            )
        )
        is not None
    )


def _open_ticket(
    session: Session,
    policy: MailPolicy,
    row: RawMessage,
    msg: ParsedMessage,
    sender: Address,
    dedupe_key: str,
    parent: Ticket | None,
) -> Outcome:
    subject = strip_reply_prefixes(remove_tag(policy.subject_tag, msg.subject)) or NO_SUBJECT
    language = msg.language if msg.language in ("es", "en") else policy.default_language
    ticket = Ticket(
        subject=subject[:2000],
        status=Status.NEW.value,
        requester=sender.email,
        language=language,
        parent_id=parent.id if parent else None,
    )
    session.add(ticket)
    session.flush()
    _add_participant(session, ticket, sender, ParticipantRole.REQUESTER, policy)
    for address in _copied(policy, msg, sender):
        _add_participant(session, ticket, address, _role_for(policy, address), policy)
    article = _add_article(session, policy, row, msg, ticket, sender, dedupe_key)
    record(session, ticket, "created", sender.email, source=row.source, raw_id=row.id)
    if parent is not None:
        record(
            session,
            ticket,
            "linked",
            sender.email,
            field="parent",
            new=parent.id,
            note="reply to a closed ticket",
        )
        record(session, parent, "linked", sender.email, field="follow_up", new=ticket.id)
    return Outcome(
        row.id,
        RawState.PROCESSED,
        ticket.id,
        article.id,
        changes=(TicketCreated(ticket.id, article.id),),
    )


def _apply_reply(
    session: Session,
    policy: MailPolicy,
    row: RawMessage,
    msg: ParsedMessage,
    sender: Address,
    ticket: Ticket,
    dedupe_key: str,
) -> Outcome:
    known = {p.email for p in ticket.participants}
    for address in (sender, *_copied(policy, msg, sender)):
        if address.email not in known:
            _add_participant(session, ticket, address, _role_for(policy, address), policy)
            known.add(address.email)
    article = _add_article(session, policy, row, msg, ticket, sender, dedupe_key)
    record(session, ticket, "article", sender.email, field="article", new=article.id)
    changes: list[Change] = [CustomerReplied(ticket.id, article.id)]
    if not policy.is_agent(sender.email) and ticket.status in (
        Status.WAITING_ON_CUSTOMER,
        Status.RESOLVED,
    ):
        changes += _customer_moves(session, ticket, msg, sender)
    ticket.updated_at = utcnow()
    return Outcome(row.id, RawState.PROCESSED, ticket.id, article.id, changes=tuple(changes))


def _customer_moves(
    session: Session, ticket: Ticket, msg: ParsedMessage, sender: Address
) -> list[Change]:
    """A customer's reply to a ticket waiting on them, or resolved: a confirmation closes a
    resolved ticket (seed 004), anything else puts it back in progress."""
    if ticket.status == Status.RESOLVED and confirms(
        msg.new_text or msg.text, attachments=len(msg.attachments)
    ):
        why = "resolution confirmed by the customer"
        return change_status(session, ticket, Status.CLOSED, sender.email, note=why)
    note = "reopened by the customer's reply" if ticket.status == Status.RESOLVED else None
    return change_status(session, ticket, Status.IN_PROGRESS, sender.email, note=note)


def _copied(policy: MailPolicy, msg: ParsedMessage, sender: Address) -> list[Address]:
    """Everyone else on To and Cc who is not us: they become watchers."""
    seen = {sender.email}
    result = []
    for address in (*msg.to, *msg.cc):
        if address.email in seen or policy.is_own(address.email):
            continue
        seen.add(address.email)
        result.append(address)
    return result


def _role_for(policy: MailPolicy, address: Address) -> ParticipantRole:
    return ParticipantRole.AGENT if policy.is_agent(address.email) else ParticipantRole.WATCHER


def _add_participant(
    session: Session,
    ticket: Ticket,
    address: Address,
    role: ParticipantRole,
    policy: MailPolicy,
) -> None:
    session.add(Participant(ticket=ticket, email=address.email, name=address.name[:300], role=role))
    if role is not ParticipantRole.REQUESTER:
        record(session, ticket, "participant", address.email, field=role.value, new=address.email)


def _add_article(
    session: Session,
    policy: MailPolicy,
    row: RawMessage,
    msg: ParsedMessage,
    ticket: Ticket,
    sender: Address,
    dedupe_key: str,
) -> Article:
    article = Article(
        ticket=ticket,
        kind=ArticleKind.INBOUND,
        message_id=(msg.message_id or "")[:998] or None,
        content_digest=msg.content_digest,
        dedupe_key=dedupe_key[:1100],
        raw_message_id=row.id,
        from_addr=sender.email,
        from_name=sender.name,
        to_addrs=[a.email for a in msg.to],
        cc_addrs=[a.email for a in msg.cc],
        subject=msg.subject,
        text=msg.text,
        html=msg.html,
        new_text=msg.new_text,
        author=sender.email if policy.is_agent(sender.email) else None,
    )
    blobs = BlobStore(policy.attachments_dir)
    for item in msg.attachments:
        article.attachments.append(
            AttachmentFile(
                sha256=blobs.put(item.payload),
                filename=item.filename[:255],
                content_type=item.content_type[:255],
                size=item.size,
                inline=item.inline,
                content_id=(item.content_id or "")[:998] or None,
            )
        )
    session.add(article)
    session.flush()
    return article


# --- agents' mail (tickets.agent_mail) -------------------------------------------------------


def _agent_binding(
    policy: MailPolicy, row: RawMessage, msg: ParsedMessage, sender: Address
) -> agent_mail.AgentBinding | None:
    rcpts = [a.email for a in (*msg.to, *msg.cc)]
    rcpts += [*msg.delivered_to, *(row.envelope.get("rcpt_tos") or [])]
    return agent_mail.bind(policy, row.raw, msg, sender, rcpts)


def _apply_agent(
    session: Session,
    policy: MailPolicy,
    row: RawMessage,
    msg: ParsedMessage,
    binding: agent_mail.AgentBinding,
    dedupe_key: str,
) -> Outcome:
    done = agent_mail.apply(session, policy, row, msg, binding, dedupe_key)
    return Outcome(
        row.id, done.state, done.ticket_id, done.article_id, done.reason, changes=done.changes
    )


# --- bounces ------------------------------------------------------------------------------


def _apply_bounce(
    session: Session, policy: MailPolicy, row: RawMessage, msg: ParsedMessage
) -> Outcome:
    ticket = None
    if msg.dsn_original_message_id:
        ticket = _ticket_by_message_id(session, policy, msg.dsn_original_message_id)
    permanent = [f for f in msg.delivery_failures if f.permanent]
    for failure in permanent:
        mark_bouncing(session, failure.recipient, f"{failure.status} {failure.diagnostic}".strip())
    if ticket is not None:
        record(
            session,
            ticket,
            "bounce",
            "mailer-daemon",
            recipients=[f.recipient for f in msg.delivery_failures],
            permanent=bool(permanent),
        )
    failed = ", ".join(f.recipient for f in msg.delivery_failures) or "unknown recipient"
    return Outcome(
        row.id,
        RawState.IGNORED,
        ticket.id if ticket else None,
        reason=f"bounce for {failed}"[:500],
    )
