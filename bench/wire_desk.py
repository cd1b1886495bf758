"""The desk in process on the imap1000 mails: ms, SQL statements and commits per mail.

The mails are stored as pending rows first (not timed); then the ingest worker of
`daemon.wiring.App` drains them, as `buzon imap` / `buzon smtp` do, while a SQLAlchemy
event listener counts every statement and commit on the App's engine. The originals
(new tickets) are drained first, then the replies, so each kind gets its own figures
whatever batching the desk does. `--floor` times instead what processing cannot go
below on one core: mail-parser's parse plus a bare Core insert of two rows per mail
(a ticket-like and an article-like row), 100 mails a transaction.

    .venv/bin/python bench/wire_desk.py --msgs DIR [--db-url URL] [--count N]
        [--cprofile FILE.txt] [--floor] [--extra-toml FILE]

Prints one JSON line. Run by bench/wire_speed.py; alone for a profile.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import tempfile
import time
from collections import Counter
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import Column, Integer, MetaData, String, Table, Text, event  # noqa: E402

from bench.wire_common import BUZON_ENV, Store, buzon_toml  # noqa: E402
from daemon.config import load_settings  # noqa: E402
from daemon.wiring import App  # noqa: E402
from tickets.inbox import accept  # noqa: E402


def load_mails(msgs: Path, count: int) -> tuple[list[bytes], list[bytes]]:
    """The first `count` of imap1000, split into originals and replies (by their headers)."""
    headers = BytesHeaderParser()
    originals, replies = [], []
    for path in sorted((msgs / "imap1000").glob("*.eml"))[:count]:
        raw = path.read_bytes()
        msg = headers.parsebytes(raw)
        (replies if msg["In-Reply-To"] or msg["References"] else originals).append(raw)
    return originals, replies


class SqlCounter:
    """Statements (by first word) and commits on one engine, from SQLAlchemy's events."""

    def __init__(self, app: App) -> None:
        self.statements: Counter[str] = Counter()
        self.commits = 0
        event.listen(app.engine, "before_cursor_execute", self._statement)
        event.listen(app.engine, "commit", self._commit)

    def _statement(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        words = statement.split(None, 1)
        self.statements[words[0].upper() if words else "?"] += 1

    def _commit(self, conn: Any) -> None:
        self.commits += 1


def drain(app: App, raws: list[bytes], counter: SqlCounter) -> dict[str, Any]:
    """Store `raws` as pending rows, then time the worker draining them."""
    for raw in raws:
        accept(app.sessions, raw, "imap", {})
    worker = app.ingest_worker()
    before, commits = Counter(counter.statements), counter.commits
    cpu, wall = time.process_time(), time.perf_counter()
    handled = worker.drain()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    n = max(len(raws), 1)
    statements = counter.statements - before
    return {
        "mails": len(raws),
        "handled": handled,
        "outcomes": dict(worker.outcomes),
        "wall_ms": round(wall / n * 1000, 2),
        "cpu_ms": round(cpu / n * 1000, 2),
        "statements": round(sum(statements.values()) / n, 2),
        "commits": round((counter.commits - commits) / n, 3),
        "by_verb": {verb: round(c / n, 2) for verb, c in statements.most_common()},
    }


def run_desk(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    extra = Path(args.extra_toml).read_text() if args.extra_toml else ""
    app = App(load_settings(buzon_toml(root, args.db_url, extra)))
    app.prepare()
    counter = SqlCounter(app)
    originals, replies = load_mails(Path(args.msgs), args.count)
    profile = cProfile.Profile() if args.cprofile else None
    if profile:
        profile.enable()
    new = drain(app, originals, counter)
    reply = drain(app, replies, counter)
    if profile:
        profile.disable()
        write_profile(profile, Path(args.cprofile), len(originals) + len(replies))
    n = new["mails"] + reply["mails"]
    result = {
        "db": app.engine.dialect.name,
        "new": new,
        "reply": reply,
        "all": {
            key: round((new[key] * new["mails"] + reply[key] * reply["mails"]) / n, 3)
            for key in ("wall_ms", "cpu_ms", "statements", "commits")
        },
    }
    store = Store(app.settings.db_url)
    result |= {**store.counts(), "states": store.states()}
    store.close()
    app.engine.dispose()
    return result


def write_profile(profile: cProfile.Profile, path: Path, mails: int) -> None:
    """The top functions by cumulative and own time, in ms per mail, and the raw stats."""
    profile.dump_stats(str(path.with_suffix(".prof")))
    out = io.StringIO()
    out.write(f"cProfile of the desk draining {mails} mails; times are per mail below\n")
    stats = pstats.Stats(profile, stream=out)
    for key in ("cumulative", "tottime"):
        stats.sort_stats(key).print_stats(45)
    path.write_text(out.getvalue())


def run_floor(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """mail-parser alone, then a bare Core insert of two rows a mail, 100 a transaction."""
    import mailparser
    from sqlalchemy import create_engine, insert

    originals, replies = load_mails(Path(args.msgs), args.count)
    raws = originals + replies
    start = time.perf_counter()
    parsed = [mailparser.parse_from_bytes(raw) for raw in raws]
    parse_s = time.perf_counter() - start
    url = args.db_url or f"sqlite:///{root / 'floor.db'}"
    engine = create_engine(url)
    meta = MetaData()
    ticket = Table(
        "floor_ticket",
        meta,
        Column("id", Integer, primary_key=True),
        Column("subject", Text),
        Column("requester", String(320)),
    )
    article = Table(
        "floor_article",
        meta,
        Column("id", Integer, primary_key=True),
        Column("ticket_id", Integer),
        Column("message_id", Text),
        Column("body", Text),
    )
    meta.create_all(engine)
    start = time.perf_counter()
    for first in range(0, len(parsed), 100):
        with engine.begin() as conn:
            for mail in parsed[first : first + 100]:
                sender = mail.from_[0][1] if mail.from_ else ""
                row = {"subject": mail.subject, "requester": sender[:320]}
                ticket_id = conn.execute(insert(ticket).values(row)).inserted_primary_key[0]
                conn.execute(
                    insert(article).values(
                        ticket_id=ticket_id, message_id=mail.message_id, body=mail.body
                    )
                )
    insert_s = time.perf_counter() - start
    meta.drop_all(engine)
    engine.dispose()
    n = len(raws)
    return {
        "mails": n,
        "parse_ms": round(parse_s / n * 1000, 3),
        "insert_ms": round(insert_s / n * 1000, 3),
        "floor_ms": round((parse_s + insert_s) / n * 1000, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--msgs", required=True, help="gen_messages.py's output directory")
    parser.add_argument("--db-url", help="default: SQLite in a temporary directory")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--cprofile", help="write a cProfile report here (and .prof beside)")
    parser.add_argument("--floor", action="store_true")
    parser.add_argument("--extra-toml", help="TOML appended to buzón's config")
    args = parser.parse_args()
    os.environ.update(BUZON_ENV)
    with tempfile.TemporaryDirectory(prefix="buzon-wire-desk-") as tmp:
        result = run_floor(args, Path(tmp)) if args.floor else run_desk(args, Path(tmp))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
