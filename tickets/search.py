"""Full-text search over tickets (subject and every article), on both databases.

One interface, two engines: SQLite's FTS5 over words stemmed by Snowball's Spanish
stemmer, PostgreSQL's `tsvector` with its Spanish configuration. Either way accents and
case do not matter and a word finds its inflections (`facturas` finds "factura").
The index is refreshed by the desk inside the transaction of every change that adds
text to a ticket.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import snowballstemmer
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from tickets.models import Article, Ticket
from tickets.routing import fold

_WORD = re.compile(r"\w+")
_STEMMER = snowballstemmer.stemmer("spanish")
MAX_INDEXED = 200_000  # characters of a ticket's text that are indexed


def index(session: Session, ticket_ids: Iterable[int]) -> None:
    """(Re)index these tickets' subject and articles."""
    postgres = _is_postgres(session)
    for ticket_id in dict.fromkeys(ticket_ids):
        body = _ticket_text(session, ticket_id)
        if body is None:
            continue
        if postgres:
            session.execute(
                text(
                    "INSERT INTO ticket_search (ticket_id, body) VALUES (:id, :body) "
                    "ON CONFLICT (ticket_id) DO UPDATE SET body = excluded.body"
                ),
                {"id": ticket_id, "body": body},
            )
        else:
            session.execute(text("DELETE FROM ticket_search WHERE rowid = :id"), {"id": ticket_id})
            session.execute(
                text("INSERT INTO ticket_search (rowid, body) VALUES (:id, :body)"),
                {"id": ticket_id, "body": stems(body)},
            )


def search(session: Session, query: str, limit: int = 50, *, any_word: bool = False) -> list[int]:
    """Ticket numbers whose text has every word of `query` (or any, for similarity),
    best first."""
    words = [w for w in _WORD.findall(query.casefold()) if len(w) > 1][:30]
    if not words:
        return []
    if _is_postgres(session):
        joiner = " | " if any_word else " & "
        statement = text(
            "SELECT ticket_id FROM ticket_search, to_tsquery('spanish', :q) AS q "
            "WHERE to_tsvector('spanish', body) @@ q "
            "ORDER BY ts_rank(to_tsvector('spanish', body), q) DESC, ticket_id DESC LIMIT :n"
        )
        params: dict[str, object] = {"q": joiner.join(words), "n": limit}
    else:
        joiner = " OR " if any_word else " "
        statement = text(
            "SELECT rowid FROM ticket_search WHERE ticket_search MATCH :q "
            "ORDER BY rank, rowid DESC LIMIT :n"
        )
        params = {"q": joiner.join(f'"{s}"' for s in dict.fromkeys(_stem_all(words))), "n": limit}
    return [int(row[0]) for row in session.execute(statement, params)]


def similar(session: Session, ticket: Ticket, limit: int = 5) -> dict[str, list[int]]:
    """Candidates for "posibles duplicados / relacionados": the requester's other open
    tickets, and the tickets whose words are closest to this one's subject."""
    same_requester = list(
        session.scalars(
            select(Ticket.id)
            .where(
                Ticket.requester == ticket.requester,
                Ticket.id != ticket.id,
                Ticket.status.not_in(["resolved", "closed"]),
            )
            .order_by(Ticket.id.desc())
            .limit(limit)
        )
    )
    related = [
        n
        for n in search(session, ticket.subject, limit + 1, any_word=True)
        if n != ticket.id and n not in same_requester
    ][:limit]
    return {"same_requester": same_requester, "related": related}


def stems(body: str) -> str:
    return " ".join(_stem_all(_WORD.findall(body.casefold())))


def _stem_all(words: list[str]) -> list[str]:
    """Stemmed with their accents (the stemmer's rules know "-ación"), then folded, so
    that a word typed without accents still meets its stem."""
    return [fold(stem) for stem in _STEMMER.stemWords(words)]


def _ticket_text(session: Session, ticket_id: int) -> str | None:
    subject = session.scalar(select(Ticket.subject).where(Ticket.id == ticket_id))
    if subject is None:
        return None
    texts = session.scalars(
        select(Article.new_text).where(Article.ticket_id == ticket_id).order_by(Article.id)
    )
    return "\n".join([subject, *(t for t in texts if t)])[:MAX_INDEXED]


def _is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"
