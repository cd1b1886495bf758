"""The console's sign-in link, mailed to an agent through the outbox like every other
mail (written in the caller's transaction, delivered by the outbox job). It belongs to
no ticket: no ticket subject, no thread headers, no history event."""

from __future__ import annotations

import secrets
from datetime import datetime

from sqlalchemy.orm import Session

from notifier.compose import AUTO_GENERATED, Draft, Mailbox, compose
from notifier.outbox import enqueue
from notifier.render import Renderer

KIND = "sign_in"
SUBJECTS = {
    "es": "Tu enlace para entrar a la consola de soporte",
    "en": "Your sign-in link to the support console",
}


def queue_sign_in_link(
    session: Session,
    renderer: Renderer,
    *,
    sender: Mailbox,
    agent: Mailbox,
    link: str,
    minutes: float,
    language: str,
    now: datetime,
) -> int:
    """Write the outbox row of the mail; its id."""
    body = renderer.render(
        language, "sign_in_link", {"name": agent.name, "link": link, "minutes": round(minutes)}
    ).body
    domain = sender.email.partition("@")[2] or "localhost"
    message_id = f"buzon.signin.{secrets.token_hex(12)}@{domain}"
    draft = Draft(
        subject=SUBJECTS.get(language, SUBJECTS["es"]),
        body=body,
        sender=sender,
        to=[agent],
        auto_submitted=AUTO_GENERATED,
        language=language,
    )
    return enqueue(
        session,
        compose(draft, message_id, now),
        message_id=message_id,
        kind=KIND,
        mail_from=sender.email,
        recipients=[agent.email],
        ticket_id=None,
        article_id=None,
        automatic=False,  # not counted in the customers' send budget
        now=now,
    )
