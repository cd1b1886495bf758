"""Full-text search over tickets (subject and every article), on both databases.

One interface, two engines: SQLite's FTS5 over words stemmed by Snowball's Spanish
stemmer, PostgreSQL's `tsvector` with its Spanish configuration. Either way accents and
case do not matter and a word finds its inflections (`facturas` finds "factura").
The index is kept by the desk inside the transaction of every change that adds text to
a ticket: a new ticket is indexed whole, a reply or a note only appends its own words
(re-reading and re-stemming a long thread on every reply was 40 % of processing).
Stemming runs in C when PyStemmer is installed (snowballstemmer picks it up), and each
distinct word is stemmed once per process.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

import snowballstemmer
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from tickets.changes import AgentReplied, Change, CustomerReplied, NoteAdded, TicketCreated
from tickets.models import Article, Ticket
from tickets.routing import fold

_WORD = re.compile(r"\w+")
_STEMMER = snowballstemmer.stemmer("spanish")
MAX_INDEXED = 200_000  # characters of a ticket's text that are indexed


def follow(session: Session, changes: Iterable[Change]) -> None:
    """Keep the index up with these changes: new tickets whole, new articles appended."""
    added: dict[int, list[int]] = {}
    for change in changes:
        if isinstance(change, TicketCreated):
            index(session, [change.ticket_id])
            added.pop(change.ticket_id, None)  # indexed whole, its first article included
        elif isinstance(change, CustomerReplied | AgentReplied | NoteAdded):
            added.setdefault(change.ticket_id, []).append(change.article_id)
    for ticket_id, article_ids in added.items():
        _append(session, ticket_id, article_ids)


def index(session: Session, ticket_ids: Iterable[int]) -> None:
    """(Re)index these tickets' subject and articles."""
    for ticket_id in dict.fromkeys(ticket_ids):
        body = _ticket_text(session, ticket_id)
        if body is not None:
            _store(session, ticket_id, body)


def _append(session: Session, ticket_id: int, article_ids: list[int]) -> None:
    """Add these articles' words to a ticket's indexed text (the whole text when the
    ticket has no row yet: indexed before search existed, or merged into)."""
    postgres = _is_postgres(session)
    column = "ticket_id" if postgres else "rowid"
    indexed = session.scalar(
        text(f"SELECT body FROM ticket_search WHERE {column} = :id"), {"id": ticket_id}
    )
    if indexed is None:
        index(session, [ticket_id])
        return
    if len(indexed) >= MAX_INDEXED:
        return
    texts = session.scalars(
        select(Article.new_text).where(Article.id.in_(article_ids)).order_by(Article.id)
    )
    new = "\n".join(t for t in texts if t)
    if not new:
        return
    if postgres:
        body = (indexed + "\n" + new)[:MAX_INDEXED]
    else:
        body = (indexed + " " + stems(new))[:MAX_INDEXED]
    _store(session, ticket_id, body, stemmed=True)


def _store(session: Session, ticket_id: int, body: str, *, stemmed: bool = False) -> None:
    if _is_postgres(session):  # PostgreSQL stems at query time (to_tsvector 'spanish')
        session.execute(
            text(
                "INSERT INTO ticket_search (ticket_id, body) VALUES (:id, :body) "
                "ON CONFLICT (ticket_id) DO UPDATE SET body = excluded.body"
            ),
            {"id": ticket_id, "body": body},
        )
        return
    session.execute(text("DELETE FROM ticket_search WHERE rowid = :id"), {"id": ticket_id})
    session.execute(
        text("INSERT INTO ticket_search (rowid, body) VALUES (:id, :body)"),
        {"id": ticket_id, "body": body if stemmed else stems(body)},
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


@lru_cache(maxsize=100_000)
def _stem(word: str) -> str:
    """Stemmed with its accents (the stemmer's rules know "-ación"), then folded, so
    that a word typed without accents still meets its stem."""
    stem: str = _STEMMER.stemWord(word)
    return fold(stem)


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
