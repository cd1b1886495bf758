"""Many stored messages into tickets in one transaction: the ingest worker's path.

`process_batch` reads the claimed rows' bytes with one query and parses them before the
write transaction (a hostile mail's parse never holds the write lock). Then one
transaction applies them in order, each mail inside a SAVEPOINT: a mail that raises is
rolled back to its savepoint and ends `failed` (then `quarantined`) alone, its
neighbours commit. The rows' outcomes are written with one set-based UPDATE at the end
of the batch, and the transaction commits once.

Whatever goes wrong with the batch as a whole (a transient error inside a mail, a
COMMIT the database refuses) rolls the whole batch back and falls back to processing
its mails one by one (`tickets.ingest.process`), which keeps every guarantee of the
single path: deferral with a backoff for transient failures, the row unharmed when the
database is gone. The batch is an optimisation; it never decides a mail's fate
differently from the one-by-one path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm import defer as defer_column

from parsers import ParsedMessage, parse
from tickets.changes import TicketCreated
from tickets.errors import describe
from tickets.inbox import SessionFactory, bounded_id
from tickets.ingest import (
    FINISHED,
    HEADER_SPAN,
    HEADS,
    AfterApply,
    Known,
    OnNew,
    Outcome,
    apply_parsed,
    is_transient,
    look_up,
    process,
    retry_later,
    wait_for_original,
)
from tickets.lifecycle import defer_events, write_deferred
from tickets.models import RawMessage, RawState, utcnow
from tickets.policy import MailPolicy

log = logging.getLogger("buzon.ingest")

# Called once, inside the batch's transaction, after its last mail (deferred set-based
# work such as the search index).
AfterBatch = Callable[[Session], None]
# Raw bytes one transaction reads and parses at most (with their parse, they are held
# until it commits): a batch of large mails is cut into several transactions.
GROUP_BYTES = 16 * 1024 * 1024


# `session.info` key set for the optimistic pass: any failure of a mail sends the whole
# batch to the isolated pass, so what a savepoint would guard needs none here.
OPTIMISTIC = "buzon.batch.optimistic"


class NeedsSavepoint(Exception):
    """Raised in the optimistic pass by work that would catch its own failure in a
    savepoint (the notifier's mail): the batch goes again, each mail isolated, and
    there the savepoint decides, as on the one-by-one path."""


def optimistic(session: Session) -> bool:
    """Whether `session` is a batch's optimistic pass (no savepoints)."""
    return bool(session.info.get(OPTIMISTIC))


class BatchAbandoned(Exception):
    """The batch as a whole cannot go on: its mails are processed one by one instead."""


class _Isolate(BatchAbandoned):
    """A mail failed in the optimistic pass: the batch again, each mail in a savepoint."""


class TransientFailure(BatchAbandoned):
    """A mail met a transient failure (database away, disk full): as on the one-by-one
    path, that mail goes back to the queue with a backoff; the batch's others go on."""

    def __init__(self, raw_id: int, error: Exception) -> None:
        super().__init__(describe(error))
        self.raw_id = raw_id
        self.error = error


@dataclass
class _Parsed:
    row_id: int
    message: ParsedMessage
    head: bytes  # its first bytes: a ticket it opens has its conversation root there


def process_batch(
    sf: SessionFactory,
    policy: MailPolicy,
    raw_ids: Sequence[int],
    after_apply: AfterApply | None = None,
    on_new: OnNew | None = None,
    after_batch: AfterBatch | None = None,
) -> list[Outcome]:
    """Parse and apply these stored messages; one outcome per id, in order. Like
    `process`, it never raises for a message's own failure; only a store that cannot
    even record a deferral makes the error reach the caller."""
    outcomes: dict[int, Outcome] = {}
    for group in _by_size(sf, raw_ids):
        outcomes.update(_process_group(sf, policy, group, after_apply, on_new, after_batch))
    return [outcomes[raw_id] for raw_id in raw_ids]


def _by_size(sf: SessionFactory, raw_ids: Sequence[int]) -> list[list[int]]:
    """The ids in order, cut so that a transaction holds at most GROUP_BYTES of raw mail
    (and its parse) in memory; a larger mail goes alone."""
    with sf() as session:
        sizes = dict(
            session.execute(
                select(RawMessage.id, RawMessage.size).where(RawMessage.id.in_(list(raw_ids)))
            ).all()
        )
    groups: list[list[int]] = [[]]
    held = 0
    for raw_id in raw_ids:
        size = int(sizes.get(raw_id) or 0)
        if groups[-1] and held + size > GROUP_BYTES:
            groups.append([])
            held = 0
        groups[-1].append(raw_id)
        held += size
    return [group for group in groups if group]


def _process_group(
    sf: SessionFactory,
    policy: MailPolicy,
    raw_ids: list[int],
    after_apply: AfterApply | None,
    on_new: OnNew | None,
    after_batch: AfterBatch | None,
) -> dict[int, Outcome]:
    outcomes: dict[int, Outcome] = {}
    alone: list[int] = []  # rows the batch leaves to the one-by-one path
    parsed: list[_Parsed] = []
    stored = _unfinished(sf, raw_ids)
    for raw_id in raw_ids:
        item = stored.get(raw_id)
        if isinstance(item, Outcome):
            outcomes[raw_id] = item
        elif item is None:
            alone.append(raw_id)  # the single path says what is wrong with it
        else:
            try:
                message = parse(item, policy.limits, policy.spam)
                parsed.append(_Parsed(raw_id, message, bytes(item[:HEADER_SPAN])))
            except Exception:  # noqa: BLE001 - the single path records this mail's failure
                alone.append(raw_id)
    isolated = False
    while parsed:
        try:
            done, parsed = _apply_all(
                sf, policy, parsed, after_apply, on_new, after_batch, isolated
            )
            outcomes.update(done)
            isolated = False  # the rest, in a transaction of its own, optimistic again
        except _Isolate as exc:
            if isolated:  # cannot happen: an isolated mail's failure is its own
                raise AssertionError("a failure escaped its savepoint") from exc
            log.info("batch of %d again, each mail in a savepoint: %s", len(parsed), exc)
            isolated = True
        except TransientFailure as exc:
            # Nothing of the batch was committed. The mail that met it waits its backoff
            # (or, the store gone, the error reaches the worker); the others go again.
            outcomes[exc.raw_id] = retry_later(sf, policy, exc.raw_id, exc.error)
            parsed = [p for p in parsed if p.row_id != exc.raw_id]
        except Exception as exc:  # noqa: BLE001 - nothing of the batch was committed
            log.warning(
                "batch of %d rolled back, processing one by one: %s", len(parsed), describe(exc)
            )
            alone += [p.row_id for p in parsed]
            break
    for raw_id in alone:
        outcomes[raw_id] = process(sf, policy, raw_id, after_apply, on_new)
    return outcomes


def _unfinished(sf: SessionFactory, raw_ids: Sequence[int]) -> dict[int, bytes | Outcome]:
    """The bytes of every row still to process (one query), or its outcome when finished."""
    found: dict[int, bytes | Outcome] = {}
    with sf() as session:
        rows = session.execute(
            select(
                RawMessage.id,
                RawMessage.state,
                RawMessage.ticket_id,
                RawMessage.article_id,
                RawMessage.reason,
                RawMessage.raw,
            ).where(RawMessage.id.in_(list(raw_ids)))
        )
        for raw_id, state, ticket_id, article_id, reason, raw in rows:
            if state in FINISHED:
                found[raw_id] = Outcome(raw_id, state, ticket_id, article_id, reason)
            else:
                found[raw_id] = raw
    return found


def _apply_all(
    sf: SessionFactory,
    policy: MailPolicy,
    parsed: list[_Parsed],
    after_apply: AfterApply | None,
    on_new: OnNew | None,
    after_batch: AfterBatch | None,
    isolated: bool,
) -> tuple[dict[int, Outcome], list[_Parsed]]:
    """Apply `parsed` in one transaction, up to and including the first mail that wrote
    to an existing ticket (a reply: its row is locked). Holding one such lock at most,
    a transaction never waits for a ticket while holding another, so two workers never
    deadlock on two tickets (on SQLite, which locks the whole database at BEGIN, the
    whole batch goes in one). Returns the outcomes and the mails left for the next one."""
    outcomes: dict[int, Outcome] = {}
    rest: list[_Parsed] = []
    with sf.begin() as session:
        # Locked for the batch: a worker re-claiming them as stale waits for our COMMIT,
        # then finds them finished. The bytes were read and parsed above.
        rows = {
            row.id: row
            for row in session.scalars(
                select(RawMessage)
                .where(RawMessage.id.in_([p.row_id for p in parsed]))
                .order_by(RawMessage.id)
                .options(defer_column(RawMessage.raw))
                .with_for_update()
            )
        }
        if any(p.row_id not in rows for p in parsed):
            raise BatchAbandoned("a raw message of the batch is gone")
        todo = [(rows[p.row_id], p.message) for p in parsed if rows[p.row_id].state not in FINISHED]
        for row in rows.values():
            if row.state in FINISHED:  # another worker finished it meanwhile
                outcomes[row.id] = Outcome(
                    row.id, row.state, row.ticket_id, row.article_id, row.reason
                )
        known = look_up(session, policy, todo)
        apply = _apply_isolated if isolated else _apply_optimistic
        session.info[OPTIMISTIC] = not isolated
        if not isolated:
            defer_events(session)
        session.info[HEADS] = {p.row_id: p.head for p in parsed}
        one_lock = _one_write_lock(session)
        written: list[dict[str, Any]] = []
        for n, (row, msg) in enumerate(todo):
            outcome, values = apply(session, policy, row, msg, _Hooks(after_apply, on_new, known))
            known.learn(msg, outcome)
            outcomes[row.id] = outcome
            written.append(values)
            if not one_lock and _locked_a_ticket(outcome):
                left = {r.id for r, _ in todo[n + 1 :]}
                rest = [p for p in parsed if p.row_id in left]
                break
        if not isolated:
            _write_events(session)
        if written:
            # One executemany for the batch's rows, not one UPDATE per mail.
            session.execute(update(RawMessage), written)
        if after_batch is not None:
            after_batch(session)
    for outcome in outcomes.values():
        log.info(
            "processed raw=%s state=%s ticket=%s reason=%s",
            outcome.raw_id,
            outcome.state,
            outcome.ticket_id,
            outcome.reason,
        )
    return outcomes, rest


def _write_events(session: Session) -> None:
    """The optimistic pass's history events, one executemany: a failure there is one
    of its mails', found by the isolated pass (which writes each mail's at once)."""
    try:
        write_deferred(session)
    except Exception as exc:
        if is_transient(exc):
            raise  # as any transient failure of the batch as a whole
        raise _Isolate(f"events: {describe(exc)}") from exc


def _one_write_lock(session: Session) -> bool:
    """SQLite: the transaction took the database's one write lock at BEGIN IMMEDIATE, so
    it never waits for a ticket while holding another; its replies need no cut."""
    return session.get_bind().dialect.name == "sqlite"


def _locked_a_ticket(outcome: Outcome) -> bool:
    """The mail changed a ticket that existed before it (a reply locks its row)."""
    if outcome.ticket_id is None or outcome.state != RawState.PROCESSED:
        return False
    return not any(isinstance(change, TicketCreated) for change in outcome.changes)


@dataclass(frozen=True)
class _Hooks:
    after_apply: AfterApply | None
    on_new: OnNew | None
    known: Known


def _apply_optimistic(
    session: Session, policy: MailPolicy, row: RawMessage, msg: ParsedMessage, hooks: _Hooks
) -> tuple[Outcome, dict[str, Any]]:
    """One mail without a savepoint: any failure sends the whole batch to the isolated
    pass (a transient one first puts this mail back in the queue). Its last writes are
    flushed with the next mail's (one flush, not two): whichever mail a failing flush
    meets, the isolated pass finds the one it belongs to."""
    now = utcnow()
    raw_id = row.id  # read now: a failed flush expires the row with the transaction
    try:
        outcome = apply_parsed(
            session, policy, row, msg, hooks.after_apply, hooks.on_new, hooks.known
        )
    except Exception as exc:
        if is_transient(exc):
            raise TransientFailure(raw_id, exc) from exc
        raise _Isolate(f"raw={raw_id} {describe(exc)}") from exc
    return outcome, _done(row, msg, outcome, now)


def _apply_isolated(
    session: Session, policy: MailPolicy, row: RawMessage, msg: ParsedMessage, hooks: _Hooks
) -> tuple[Outcome, dict[str, Any]]:
    """One mail in its own SAVEPOINT; its failure is rolled back to it and recorded."""
    now = utcnow()
    raw_id = row.id  # read now: a failure may expire the row
    error: Exception | None = None
    known: Known | None = hooks.known
    for attempt in range(2):
        try:
            with session.begin_nested():
                outcome = apply_parsed(
                    session, policy, row, msg, hooks.after_apply, hooks.on_new, known
                )
            return outcome, _done(row, msg, outcome, now)
        except IntegrityError as exc:
            # Another worker committed the same message a moment ago: the second try
            # looks again (not in what the batch looked up) and finds it as a duplicate.
            # A second refusal is this mail's own.
            error, known = exc, None
            if attempt == 1:
                break
        except Exception as exc:  # noqa: BLE001 - this mail's, unless transient
            if is_transient(exc):
                raise TransientFailure(raw_id, exc) from exc
            error = exc
            break
    assert error is not None
    return _failed(policy, row, msg, describe(error, 500), now)


def _done(row: RawMessage, msg: ParsedMessage, outcome: Outcome, now: datetime) -> dict[str, Any]:
    values = _values(row, msg, now, outcome.state, outcome.reason, outcome, row.attempts + 1)
    if outcome.state == RawState.PENDING:  # waits for its original: not an attempt
        retry_at, retries = wait_for_original(row, now)
        values.update(
            attempts=row.attempts,
            processed_at=None,
            claimed_at=None,
            claimed_by=None,
            retry_at=retry_at,
            retries=retries,
        )
    return values


def _failed(
    policy: MailPolicy, row: RawMessage, msg: ParsedMessage, error: str, now: datetime
) -> tuple[Outcome, dict[str, Any]]:
    """As `tickets.inbox.fail`: `failed`, then `quarantined` after `max_attempts`."""
    log.warning("process failed raw=%s error=%s", row.id, error)
    attempts = row.attempts + 1
    state = RawState.QUARANTINED if attempts >= policy.max_attempts else RawState.FAILED
    outcome = Outcome(row.id, state, reason=error)
    values = _values(row, msg, now, state, error[:1000], outcome, attempts)
    # As the one-by-one path leaves it: the mail's Message-ID was not recorded.
    values.update(message_id=row.message_id, claimed_at=None, claimed_by=None)
    return outcome, values


def _values(
    row: RawMessage,
    msg: ParsedMessage,
    now: datetime,
    state: str,
    reason: str | None,
    outcome: Outcome,
    attempts: int,
) -> dict[str, Any]:
    """The row's new columns; every row of a batch sets the same keys (one executemany)."""
    return {
        "id": row.id,
        "state": state,
        "reason": reason,
        "message_id": bounded_id(msg.message_id),
        "ticket_id": outcome.ticket_id,
        "article_id": outcome.article_id,
        "processed_at": now,
        "attempts": attempts,
        "claimed_at": row.claimed_at,
        "claimed_by": row.claimed_by,
        "retry_at": row.retry_at,
        "retries": row.retries,
    }
