"""Full-text search over tickets (subject and every article), on both databases.

One interface, two engines: SQLite's FTS5 over words stemmed by Snowball's Spanish
stemmer, PostgreSQL's `tsvector` with its Spanish configuration. Either way accents and
case do not matter and a word finds its inflections (`facturas` finds "factura").
The index is refreshed by the desk inside the transaction of every change that adds
text to a ticket (once per batch of ingested mail). Stemming runs in C when PyStemmer
is installed (snowballstemmer picks it up), and each distinct word is stemmed once.
"""

from __future__ import annotations

import functools
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
INDEX_CHUNK = 500  # tickets per set-based pass: bounded IN lists and memory


def index(session: Session, ticket_ids: Iterable[int]) -> None:
    """(Re)index these tickets' subject and articles: a few set-based statements for
    any number of tickets (a batch of ingested mail indexes once)."""
    # Sorted: two transactions writing the same tickets' rows take their locks in one
    # order, and never wait for each other in a cycle.
    ids = sorted(set(ticket_ids))
    for start in range(0, len(ids), INDEX_CHUNK):
        bodies = _ticket_texts(session, ids[start : start + INDEX_CHUNK])
        if bodies:
            _write(session, bodies)


def _write(session: Session, bodies: dict[int, str]) -> None:
    if _is_postgres(session):
        session.execute(
            text(
                "INSERT INTO ticket_search (ticket_id, body) VALUES (:id, :body) "
                "ON CONFLICT (ticket_id) DO UPDATE SET body = excluded.body"
            ),
            [{"id": ticket_id, "body": body} for ticket_id, body in bodies.items()],
        )
        return
    session.execute(
        text("DELETE FROM ticket_search WHERE rowid = :id"), [{"id": i} for i in bodies]
    )
    session.execute(
        text("INSERT INTO ticket_search (rowid, body) VALUES (:id, :body)"),
        [{"id": ticket_id, "body": stems(body)} for ticket_id, body in bodies.items()],
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
    return [_stem(word) for word in words]


# Stemming (pure Python) was the larger part of indexing a mail; a mail's words mostly
# recur, so each distinct word is stemmed once per process (bounded memory).
@functools.lru_cache(maxsize=100_000)
def _stem(word: str) -> str:
    """Stemmed with its accents (the stemmer's rules know "-ación"), then folded, so
    that a word typed without accents still meets its stem."""
    return fold(_STEMMER.stemWord(word))


def _ticket_texts(session: Session, ticket_ids: list[int]) -> dict[int, str]:
    """Each existing ticket's subject and articles' new text, as indexed."""
    found = session.execute(select(Ticket.id, Ticket.subject).where(Ticket.id.in_(ticket_ids)))
    subjects = {ticket_id: subject for ticket_id, subject in found}
    parts: dict[int, list[str]] = {ticket_id: [subject] for ticket_id, subject in subjects.items()}
    texts = session.execute(
        select(Article.ticket_id, Article.new_text)
        .where(Article.ticket_id.in_(list(subjects)))
        .order_by(Article.ticket_id, Article.id)
    )
    for ticket_id, new_text in texts:
        if new_text:
            parts[ticket_id].append(new_text)
    return {ticket_id: "\n".join(lines)[:MAX_INDEXED] for ticket_id, lines in parts.items()}


def _is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"
