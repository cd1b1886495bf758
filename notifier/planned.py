"""A planned mail: what the transaction decided, kept as JSON on the outbox row, and
turned into bytes by the delivery pass just before it is sent.

The transaction that causes a mail decides everything about it (recipients, budget,
Message-ID, threading, language, template and the template's data, the Date); building
and serialising the MIME message is left to delivery, outside the write lock. The same
plan always gives the same bytes, so a retry sends the very same message.

The body is either already rendered (when the transaction needs the text itself: an
outbound article records what the customer was sent) or a template with its data,
rendered here. A template that fails at delivery fails the row, which an operator can
put back in line after the fix (`buzon outbox retry`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTPUTF8
from pathlib import Path
from typing import Any

from notifier.compose import Draft, Mailbox, Part, compose
from notifier.render import Renderer
from tickets.blobstore import BlobStore

VERSION = 1


def serialise(message: EmailMessage, recipients: Sequence[str]) -> bytes:
    """The bytes of `message`: RFC 6532 headers for a non-ASCII address (the relay
    gets them with SMTPUTF8), else plain RFC 5322.

    A multipart's boundary comes from its Message-ID, not from chance: the bytes of a
    plan are the same however often it is rendered (a retry, a render after a fix).
    "=_" cannot occur in quoted-printable or base64 text, so no part contains it."""
    if message.is_multipart():
        digest = hashlib.sha256(str(message["Message-ID"]).encode()).hexdigest()
        message.set_boundary(f"=_{digest[:40]}")
    if all(r.isascii() for r in recipients):
        return message.as_bytes()
    return message.as_bytes(policy=SMTPUTF8)


def plan_mail(
    draft: Draft,
    now: datetime,
    *,
    template: tuple[str, str, dict[str, Any]] | None = None,
    attachments: Sequence[tuple[str, str, str]] = (),
) -> dict[str, Any]:
    """The JSON plan of `draft` dated `now`. With `template` (language, name, data) the
    body is rendered at delivery, else `draft.body` is kept as it is. `attachments` are
    (filename, content type, sha256) in the blob store, read at delivery."""
    body: dict[str, Any] = (
        {"template": {"language": template[0], "name": template[1], "data": template[2]}}
        if template is not None
        else {"text": draft.body}
    )
    return {
        "version": VERSION,
        "date": now.isoformat(),
        "subject": draft.subject,
        "body": body,
        "from": _mailbox(draft.sender),
        "to": [_mailbox(m) for m in draft.to],
        "cc": [_mailbox(m) for m in draft.cc],
        "reply_to": _mailbox(draft.reply_to) if draft.reply_to is not None else None,
        "in_reply_to": draft.in_reply_to,
        "references": list(draft.references),
        "auto_submitted": draft.auto_submitted,
        "language": draft.language,
        "attachments": [list(a) for a in attachments],
        "thread_topic": draft.thread_topic,
        "thread_index": draft.thread_index,
    }


class Materializer:
    """Turns a plan into the bytes to send (the delivery pass's renderer)."""

    def __init__(self, renderer: Renderer, attachments_dir: Path | None) -> None:
        self.renderer = renderer
        self.attachments_dir = attachments_dir

    def raw(self, plan: dict[str, Any], message_id: str, recipients: Sequence[str]) -> bytes:
        draft = self.draft(plan)
        message = compose(draft, message_id, datetime.fromisoformat(plan["date"]))
        return serialise(message, recipients)

    def draft(self, plan: dict[str, Any]) -> Draft:
        if plan.get("version") != VERSION:
            raise ValueError(f"outbox plan version {plan.get('version')!r} is not {VERSION}")
        reply_to = plan["reply_to"]
        draft = Draft(
            subject=plan["subject"],
            body="",
            sender=Mailbox(*plan["from"]),
            to=[Mailbox(*m) for m in plan["to"]],
            cc=[Mailbox(*m) for m in plan["cc"]],
            reply_to=Mailbox(*reply_to) if reply_to is not None else None,
            in_reply_to=plan["in_reply_to"],
            references=plan["references"],
            auto_submitted=plan["auto_submitted"],
            language=plan["language"],
            attachments=self._parts(plan["attachments"]),
            thread_topic=plan["thread_topic"],
            thread_index=plan["thread_index"],
        )
        return replace(draft, body=self._body(plan["body"]))

    def _body(self, body: dict[str, Any]) -> str:
        if "text" in body:
            return str(body["text"])
        template = body["template"]
        rendered = self.renderer.render(template["language"], template["name"], template["data"])
        return rendered.body

    def _parts(self, attachments: list[list[str]]) -> list[Part]:
        if not attachments:
            return []
        if self.attachments_dir is None:
            raise ValueError("the plan has attachments and no attachments directory is set")
        blobs = BlobStore(self.attachments_dir)
        return [Part(name, kind, blobs.get(sha256)) for name, kind, sha256 in attachments]


def _mailbox(mailbox: Mailbox) -> list[str]:
    return [mailbox.email, mailbox.name]
