"""Batched ingest (issue 15): claimed rows become tickets in one transaction, each mail in a
savepoint; one bad mail fails alone; few statements per mail; exactly once under two
workers."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select

import tickets.batch
import tickets.ingest
from daemon.wiring import App
from notifier.conversation import thread_root
from tests.helpers import count, make_app
from tests.mailbuilder import mail
from tickets import search
from tickets.inbox import accept, accept_many, claim_pending
from tickets.models import Article, Event, OutboxMessage, RawMessage, Ticket

POISON = "VENENO"
# A new-ticket mail with its acknowledgement, inside a batch, costs at most this many SQL
# statements: 35.5 before batching, 13.5 with it, 10.6 with no savepoint and no thread
# lookup for an acknowledgement, 7.7 now (the thread root taken from the parsed bytes,
# the history events one executemany for the batch): the aim.
MAX_STATEMENTS_PER_NEW_TICKET = 8


def customer(n: int, subject: str = "Consulta") -> bytes:
    return mail(
        f"Cliente {n} <cliente{n}@clinica.example>",
        f"{subject} {n}",
        f"Hola, mi referencia es ref{n}.",
    )


@contextmanager
def executed(app: App) -> Iterator[list[str]]:
    """Every SQL statement run on the app's engine inside the block, as sent."""
    statements: list[str] = []

    def counted(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(app.engine, "before_cursor_execute", counted)
    try:
        yield statements
    finally:
        event.remove(app.engine, "before_cursor_execute", counted)


def verbs(statements: list[str]) -> list[str]:
    return [statement.split(None, 1)[0].upper() for statement in statements]


@pytest.fixture
def batch_app(tmp_path: Path, db_url: str) -> Iterator[App]:
    application = make_app(tmp_path, db_url, support_addresses=["soporte@soporte.example"])
    yield application
    application.engine.dispose()


def states(app: App, ids: list[int]) -> list[str]:
    with app.sessions() as s:
        by_id = {i: state for i, state in s.execute(select(RawMessage.id, RawMessage.state))}
    return [by_id[i] for i in ids]


def test_a_batch_is_one_ticket_and_one_acknowledgement_per_mail(batch_app: App) -> None:
    ids = accept_many(batch_app.sessions, [(customer(n), {}) for n in range(6)], "smtp")
    outcomes = batch_app.desk.ingest_batch(ids)
    assert [o.raw_id for o in outcomes] == ids
    assert [o.state for o in outcomes] == ["processed"] * 6
    assert states(batch_app, ids) == ["processed"] * 6
    assert count(batch_app, Ticket) == 6
    assert count(batch_app, OutboxMessage, OutboxMessage.kind == "acknowledgement") == 6
    with batch_app.sessions() as s:
        row = s.get(RawMessage, ids[0])
        ticket = s.get(Ticket, outcomes[0].ticket_id)
        assert row is not None and ticket is not None
        assert (row.attempts, row.ticket_id, row.message_id) == (1, ticket.id, row.message_id)
        assert row.message_id  # recorded with the outcome, as the one-by-one path does
        # The clocks were set before the INSERT: due times exist and come after creation.
        assert ticket.first_response_due_at is not None
        assert ticket.first_response_due_at > ticket.created_at
    # The history, written in one statement at the batch's end, in the order it happened.
    with batch_app.sessions() as s:
        history = s.execute(select(Event.ticket_id, Event.kind).order_by(Event.id)).all()
    assert history == [(o.ticket_id, k) for o in outcomes for k in ("created", "notified")]
    # Searchable once the batch committed (the index is written once per batch).
    with batch_app.sessions() as s:
        assert search.search(s, "ref3") == [outcomes[3].ticket_id]
        assert set(search.search(s, "consulta")) == {o.ticket_id for o in outcomes}
    # Finished rows handed over again: their outcomes, nothing made twice.
    again = batch_app.desk.ingest_batch(ids)
    assert [(o.state, o.ticket_id) for o in again] == [(o.state, o.ticket_id) for o in outcomes]
    assert count(batch_app, Ticket) == 6


def test_a_poisoned_mail_fails_alone_and_its_neighbours_commit(
    batch_app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stand-in for a bug in the domain: no real mail makes it raise today, and the
    # point is what the batch does when one does. It raises after the ticket and the
    # article were written (flushed), so the savepoint must undo them.
    real_add_article = tickets.ingest._add_article

    def add_article_or_explode(session: Any, policy: Any, row: Any, msg: Any, *rest: Any) -> Any:
        article = real_add_article(session, policy, row, msg, *rest)
        if POISON in msg.subject:
            raise RuntimeError("domain bug\nsecond line, where a driver puts the parameters")
        return article

    monkeypatch.setattr(tickets.ingest, "_add_article", add_article_or_explode)
    raws = [customer(n) for n in range(5)]
    raws[2] = customer(2, subject=POISON)
    ids = accept_many(batch_app.sessions, [(raw, {}) for raw in raws], "smtp")

    outcomes = batch_app.desk.ingest_batch(ids)

    assert [o.state for o in outcomes] == ["processed", "processed", "failed"] + ["processed"] * 2
    assert outcomes[2].reason == "RuntimeError: domain bug"
    assert states(batch_app, ids) == ["processed", "processed", "failed", "processed", "processed"]
    with batch_app.sessions() as s:
        failed = s.get(RawMessage, ids[2])
        assert failed is not None
        assert (failed.reason, failed.attempts, failed.claimed_by) == (
            "RuntimeError: domain bug",
            1,
            None,
        )
        subjects = list(s.scalars(select(Ticket.subject).order_by(Ticket.id)))
        assert not any(POISON in subject for subject in subjects)  # rolled back whole
        assert s.scalar(select(func.count()).select_from(Article)) == 4 * 2  # + the acks
        assert s.scalar(select(func.count()).select_from(Event).where(Event.kind == "created")) == 4
    assert count(batch_app, Ticket) == 4
    assert count(batch_app, OutboxMessage) == 4


def test_an_acknowledgement_failing_in_a_batch_loses_neither_its_ticket_nor_neighbours(
    tmp_path: Path, db_url: str
) -> None:
    # The optimistic pass takes no savepoint around the notifier: the failure sends the
    # batch to the isolated pass, where it is recorded as on the one-by-one path.
    overrides = tmp_path / "plantillas"
    (overrides / "es").mkdir(parents=True)
    (overrides / "es" / "acknowledgement.body.txt").write_text(
        f'{{% if "{POISON}" in subject %}}{{{{ no_such_value }}}}{{% endif %}}Recibido.\n'
    )
    app = make_app(
        tmp_path,
        db_url,
        support_addresses=["soporte@soporte.example"],
        outbound={"templates_dir": str(overrides)},
    )
    raws = [customer(n) for n in range(4)]
    raws[1] = customer(1, subject=POISON)
    ids = accept_many(app.sessions, [(raw, {}) for raw in raws], "smtp")
    outcomes = app.desk.ingest_batch(ids)
    assert [o.state for o in outcomes] == ["processed"] * 4
    assert count(app, Ticket) == 4
    assert count(app, OutboxMessage, OutboxMessage.kind == "acknowledgement") == 3
    with app.sessions() as s:
        errors = list(s.scalars(select(Event).where(Event.kind == "notify_error")))
        assert [e.ticket_id for e in errors] == [outcomes[1].ticket_id]
        assert "no_such_value" in errors[0].data["error"]
    app.engine.dispose()


def test_a_mail_failing_again_and_again_is_quarantined_by_the_batch(
    batch_app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same stand-in for a domain bug, raised before anything is written.
    real_route = tickets.ingest.route

    def route_or_explode(rules: Any, incoming: Any) -> Any:
        if POISON in incoming.subject:
            raise ValueError("no route")
        return real_route(rules, incoming)

    monkeypatch.setattr(tickets.ingest, "route", route_or_explode)
    poisoned = accept(batch_app.sessions, customer(1, subject=POISON), "smtp")
    for attempt in range(3):
        (outcome,) = batch_app.desk.ingest_batch([poisoned])
        expected = "quarantined" if attempt == 2 else "failed"
        assert outcome.state == expected
        with batch_app.sessions() as s:
            row = s.get(RawMessage, poisoned)
            assert row is not None and (row.state, row.attempts) == (expected, attempt + 1)
            row.state = "processing"  # claimed again, as a worker's next pass would
            s.commit()
    assert count(batch_app, Ticket) == 0


def test_a_new_ticket_costs_few_statements_inside_a_batch(batch_app: App) -> None:
    """Counted with a cursor listener over a whole batch of new-ticket mails, each with
    its acknowledgement queued: a behaviour of the code, not a timing."""
    n = 20
    ids = accept_many(batch_app.sessions, [(customer(i), {}) for i in range(n)], "smtp")
    claimed = claim_pending(batch_app.sessions, "w1", n, 300)
    with executed(batch_app) as statements:
        outcomes = batch_app.desk.ingest_batch(claimed)
    assert [o.state for o in outcomes] == ["processed"] * n
    assert sorted(claimed) == sorted(ids)
    assert count(batch_app, OutboxMessage, OutboxMessage.kind == "acknowledgement") == n
    per_mail = len(statements) / n
    assert per_mail <= MAX_STATEMENTS_PER_NEW_TICKET, (per_mail, sorted(set(verbs(statements))))
    # Two short reads (sizes, then the bytes) before one write transaction for the batch.
    assert verbs(statements).count("BEGIN") <= 3


def test_an_acknowledgement_continues_the_outlook_thread_without_reading_the_mail_back(
    batch_app: App,
) -> None:
    """The opening mail's Thread-Index is taken from the bytes the batch parsed: the
    acknowledgement is filed under the customer's conversation, and no SELECT reads the
    mail's head back from the row just processed."""
    theirs = thread_root(datetime(2026, 2, 1, 9, 30, tzinfo=UTC), b"\x42" * 16)
    outlook = mail(
        "Cliente <cliente@clinica.example>",
        "Consulta",
        "Hola.",
        client="outlook",
        headers={"Thread-Index": base64.b64encode(theirs).decode()},
    )
    ids = accept_many(batch_app.sessions, [(outlook, {}), (customer(1), {})], "smtp")
    with executed(batch_app) as statements:
        outcomes = batch_app.desk.ingest_batch(ids)
    assert [o.state for o in outcomes] == ["processed"] * 2
    assert not [s for s in statements if "substr" in s.lower()]
    with batch_app.sessions() as s:
        plans = {row.ticket_id: row.plan for row in s.scalars(select(OutboxMessage))}
    roots = {
        ticket_id: base64.b64decode(str(plan["thread_index"]))[:22]
        for ticket_id, plan in plans.items()
        if plan is not None
    }
    assert roots[outcomes[0].ticket_id] == theirs
    assert roots[outcomes[1].ticket_id] != theirs  # rooted in its own ticket


def test_replies_in_a_batch_thread_onto_tickets_the_batch_opened_and_cost_few_statements(
    batch_app: App,
) -> None:
    """Each customer writes, then answers their own first mail (In-Reply-To), in the same
    batch: every reply joins the ticket its first mail opened a moment before."""
    firsts = [f"<primero{n}@mail.example>" for n in range(4)]
    raws = [
        mail(f"Cliente {n} <cliente{n}@clinica.example>", f"Consulta {n}", "Hola.", msgid=mid)
        for n, mid in enumerate(firsts)
    ]
    raws += [
        mail(
            f"Cliente {n} <cliente{n}@clinica.example>",
            f"Re: Consulta {n}",
            f"Otro dato: ref{n}.",
            in_reply_to=mid,
            references=[mid],
        )
        for n, mid in enumerate(firsts)
    ]
    ids = accept_many(batch_app.sessions, [(raw, {}) for raw in raws], "smtp")
    with executed(batch_app) as statements:
        outcomes = batch_app.desk.ingest_batch(ids)
    assert [o.state for o in outcomes] == ["processed"] * 8
    assert [o.ticket_id for o in outcomes[4:]] == [o.ticket_id for o in outcomes[:4]]
    assert count(batch_app, Ticket) == 4
    assert count(batch_app, OutboxMessage) == 4  # the acknowledgements; a reply tells nobody
    with batch_app.sessions() as s:
        assert search.search(s, "ref2") == [outcomes[2].ticket_id]
    if batch_app.engine.dialect.name == "sqlite":
        # One write transaction for all eight (BEGIN IMMEDIATE locks the whole database).
        assert verbs(statements).count("BEGIN") <= 3
        # Four new tickets (7.7 statements each) and four replies (about 6 each; 18.7 when
        # every reply had a transaction of its own).
        assert len(statements) / 8 <= 7, sorted(set(verbs(statements)))


def test_a_ticket_a_batch_opens_holds_its_people_and_files_for_a_reply_in_the_same_batch(
    batch_app: App,
) -> None:
    """The opening mail (a colleague in Cc, a file) and a reply from a newcomer, in one
    batch: the ticket, its participants, the article and its attachment are written by
    Core, yet the reply joins them and the acknowledgement reaches both customers."""
    first = "<con-adjunto@mail.example>"
    opening = mail(
        "Ana <ana@clinica.example>",
        "Factura",
        "Adjunto la factura.",
        cc="Luis <luis@clinica.example>",
        msgid=first,
        attachments=[("factura.pdf", "application/pdf", b"%PDF-1.4 factura")],
    )
    reply = mail(
        "Ana <ana@clinica.example>",
        "Re: Factura",
        "Sumo a Marta.",
        cc="Luis <luis@clinica.example>, Marta <marta@clinica.example>",
        in_reply_to=first,
        references=[first],
    )
    ids = accept_many(batch_app.sessions, [(opening, {}), (reply, {})], "smtp")
    outcomes = batch_app.desk.ingest_batch(ids)
    assert [o.state for o in outcomes] == ["processed", "processed"]
    assert outcomes[1].ticket_id == outcomes[0].ticket_id
    with batch_app.sessions() as s:
        ticket = s.get_one(Ticket, outcomes[0].ticket_id)
        people = sorted((p.email, p.role) for p in ticket.participants)
        assert people == [
            ("ana@clinica.example", "requester"),
            ("luis@clinica.example", "watcher"),
            ("marta@clinica.example", "watcher"),
        ]
        opened = s.get_one(Article, outcomes[0].article_id)
        assert [(f.filename, f.size) for f in opened.attachments] == [("factura.pdf", 16)]
        assert [a.id for a in ticket.articles if a.kind == "inbound"] == [
            outcomes[0].article_id,
            outcomes[1].article_id,
        ]
        ack = s.scalars(select(OutboxMessage).where(OutboxMessage.kind == "acknowledgement")).one()
        assert ack.recipients == ["ana@clinica.example", "luis@clinica.example"]
        kinds = s.scalars(select(Event.kind).where(Event.ticket_id == ticket.id).order_by(Event.id))
        assert list(kinds) == ["participant", "created", "notified", "participant", "article"]


def test_a_batch_of_large_mails_commits_in_several_transactions(
    batch_app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The bound lowered to a few of these mails, instead of writing 16 MiB of mail.
    monkeypatch.setattr(tickets.batch, "GROUP_BYTES", 700)
    raws = [customer(n) for n in range(5)]
    assert all(300 < len(raw) < 350 for raw in raws)  # two fit under the bound
    ids = accept_many(batch_app.sessions, [(raw, {}) for raw in raws], "smtp")
    commits: list[int] = []
    event.listen(batch_app.engine, "commit", lambda conn: commits.append(1))
    outcomes = batch_app.desk.ingest_batch(ids)
    assert [o.state for o in outcomes] == ["processed"] * 5
    assert len(commits) == 3  # two, two and one mail
    assert count(batch_app, Ticket) == 5
    with batch_app.sessions() as s:
        assert set(search.search(s, "consulta")) == {o.ticket_id for o in outcomes}


def test_a_reply_ends_its_transaction_so_workers_never_wait_for_two_tickets(
    batch_app: App,
) -> None:
    (first,) = batch_app.desk.ingest_batch([accept(batch_app.sessions, customer(1), "smtp")])
    reply = mail(
        "Cliente 1 <cliente1@clinica.example>", f"Re: [#{first.ticket_id}] Consulta 1", "Sigo."
    )
    raws = [customer(2), reply, customer(3), customer(4)]
    ids = accept_many(batch_app.sessions, [(raw, {}) for raw in raws], "smtp")
    commits: list[int] = []
    event.listen(batch_app.engine, "commit", lambda conn: commits.append(1))
    outcomes = batch_app.desk.ingest_batch(ids)
    assert [o.state for o in outcomes] == ["processed"] * 4
    assert outcomes[1].ticket_id == first.ticket_id
    if batch_app.engine.dialect.name == "sqlite":
        # BEGIN IMMEDIATE locked the whole database: no ticket lock to wait for, one commit.
        assert len(commits) == 1
    else:
        # [new, reply] then [new, new]: the reply's ticket lock is held alone until commit.
        assert len(commits) == 2
    assert count(batch_app, Ticket) == 4


def test_the_worker_hands_the_desk_whole_batches(batch_app: App) -> None:
    ids = accept_many(batch_app.sessions, [(customer(n), {}) for n in range(7)], "smtp")
    seen: list[list[int]] = []

    def ingest_batch(raw_ids: list[int]) -> list[tickets.ingest.Outcome]:
        seen.append(list(raw_ids))
        return batch_app.desk.ingest_batch(raw_ids)

    worker = batch_app.ingest_worker()
    worker.batch_size = 3
    worker.ingest_batch = ingest_batch
    assert worker.drain() == 7
    assert seen == [ids[0:3], ids[3:6], ids[6:7]]
    assert states(batch_app, ids) == ["processed"] * 7
    assert worker.outcomes == {"processed": 7}


@pytest.mark.postgres
@pytest.mark.timeout(300)
def test_two_workers_on_postgresql_never_process_a_row_twice(tmp_path: Path, pg_url: str) -> None:
    app = make_app(tmp_path, pg_url, support_addresses=["soporte@soporte.example"])
    try:
        total = 60
        # A second copy of a few mails: the dedupe must hold across the two workers too.
        originals = [customer(n) for n in range(total)]
        raws = originals + originals[:5]  # the same bytes again, as a refetch would
        ids = accept_many(app.sessions, [(raw, {}) for raw in raws], "smtp")
        workers = [app.ingest_worker(), app.ingest_worker()]
        for n, worker in enumerate(workers):
            worker.instance = f"test-worker-{n}"
            worker.batch_size = 7
        errors: list[BaseException] = []
        start = threading.Barrier(len(workers))

        def drain(worker: Any) -> None:
            try:
                start.wait()
                worker.drain()
            except BaseException as exc:  # noqa: BLE001 - reported by the test thread
                errors.append(exc)

        threads = [threading.Thread(target=drain, args=(w,)) for w in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(240)
        assert not errors, errors
        handled = sum(sum(w.outcomes.values()) for w in workers)
        assert handled == len(ids)  # every row handled once, by one worker
        assert all(w.outcomes for w in workers), [w.outcomes for w in workers]
        assert states(app, ids) == ["processed"] * total + ["ignored"] * 5
        assert count(app, Ticket) == total
        assert count(app, OutboxMessage, OutboxMessage.kind == "acknowledgement") == total
        with app.sessions() as s:
            per_raw = s.execute(
                select(Article.raw_message_id, func.count())
                .where(Article.raw_message_id.is_not(None))
                .group_by(Article.raw_message_id)
                .having(func.count() > 1)
            ).all()
            assert per_raw == []
            attempts = set(s.scalars(select(RawMessage.attempts)))
            assert attempts == {1}
    finally:
        app.engine.dispose()
