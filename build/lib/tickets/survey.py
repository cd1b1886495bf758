"""The satisfaction survey sent when a ticket closes (seed 004): reading the answer.

A reply that threads to the survey mail of a closed ticket and carries a rating (a
digit 1–5, or words in Spanish or English) is recorded on that ticket instead of
opening a follow-up ticket. Anything else keeps the usual rule for closed tickets.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from parsers import ParsedMessage
from tickets.lifecycle import record
from tickets.models import OutboxMessage, Ticket

SURVEY_KIND = "survey"  # the outbox kind of the survey mail
MAX_WORDS = 12  # a longer first line is a message, not an answer to "rate us 1 to 5"
MAX_COMMENT = 2000

# Longer phrases first, so that "muy mal" wins over "mal" and "muy bien" over "bien".
_WORDS: tuple[tuple[str, int], ...] = (
    ("muy mal", 1),
    ("muy malo", 1),
    ("very bad", 1),
    ("muy bien", 5),
    ("muy bueno", 5),
    ("very good", 5),
    ("excelente", 5),
    ("excellent", 5),
    ("pesimo", 1),
    ("terrible", 1),
    ("awful", 1),
    ("regular", 3),
    ("bien", 4),
    ("bueno", 4),
    ("buena", 4),
    ("good", 4),
    ("okay", 3),
    ("ok", 3),
    ("malo", 2),
    ("mala", 2),
    ("mal", 2),
    ("bad", 2),
)
# A negation up to two words before the rating word ("no", "no fue", "not really").
_NEGATED = re.compile(r"(?<!\w)(?:no|not|nada|ni|never|nunca)\s+(?:\w+\s+)?$")
_DIGIT = re.compile(r"^\W*([1-5])(?:\s*(?:/|de|of|out of)\s*5)?(?![\d.,]\d)(?:\W|$)")


@dataclass(frozen=True)
class Rating:
    value: int  # 1 (worst) … 5 (best)
    comment: str


def _plain(text: str) -> str:
    """Lower case without accents ("Pésimo" → "pesimo")."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def parse_rating(text: str) -> Rating | None:
    """The rating in the first non-empty line of a reply, or None when there is none."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if not lines:
        return None
    first = _plain(lines[0])
    if len(first.split()) > MAX_WORDS:
        return None
    comment = "\n".join(lines)[:MAX_COMMENT]
    digit = _DIGIT.match(first)
    if digit:
        return Rating(int(digit.group(1)), comment)
    for phrase, value in _WORDS:
        match = re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", first)
        # "no fue bueno" is not a 4: a negated word is no answer we can trust.
        if match and not _NEGATED.search(first[: match.start()]):
            return Rating(value, comment)
    return None


def survey_message_ids(session: Session, ticket_id: int) -> set[str]:
    return set(
        session.scalars(
            select(OutboxMessage.message_id).where(
                OutboxMessage.ticket_id == ticket_id, OutboxMessage.kind == SURVEY_KIND
            )
        )
    )


def answers_survey(session: Session, ticket: Ticket, msg: ParsedMessage) -> bool:
    """The mail replies to the survey of this ticket: it names the survey's Message-ID, or
    it names none at all and reached the surveyed ticket through its plus-address."""
    surveys = survey_message_ids(session, ticket.id)
    if not surveys:
        return False
    thread = {*msg.in_reply_to, *msg.references}
    return bool(thread & surveys) or not thread


def survey_rating(session: Session, ticket: Ticket, msg: ParsedMessage) -> Rating | None:
    """The rating a mail gives a closed, surveyed ticket; None means "not an answer"."""
    if ticket.status != "closed" or not answers_survey(session, ticket, msg):
        return None
    return parse_rating(msg.new_text or msg.text or "")


def record_rating(
    session: Session, ticket: Ticket, rating: Rating, actor: str, article_id: int | None
) -> None:
    """Keep the latest answer on the ticket; every answer stays in its history."""
    record(
        session,
        ticket,
        "survey",
        actor,
        field="survey_rating",
        old=ticket.survey_rating,
        new=rating.value,
        article=article_id,
    )
    ticket.survey_rating = rating.value
    ticket.survey_comment = rating.comment
