"""Every real-world mail of the corpus goes the whole way: stored, processed, never failed."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from daemon.wiring import App
from tests.helpers import make_app
from tickets.inbox import accept
from tickets.models import RawMessage


def corpus_files(corpus: Path) -> list[Path]:
    return sorted(p for p in corpus.rglob("*") if p.is_file() and p.name != "README.md")


def ingest_all(app: App, files: list[Path]) -> dict[int, Path]:
    ids = {
        accept(app.sessions, path.read_bytes(), "pipe", {"file": path.name}): path for path in files
    }
    worker = app.ingest_worker()
    assert worker.drain() == len(files)
    return ids


def check_outcome(app: App, ids: dict[int, Path], corpus: Path) -> Counter[str]:
    states: Counter[str] = Counter()
    broken = []
    with app.sessions() as session:
        for row in session.scalars(select(RawMessage)):
            path = ids[row.id]
            states[row.state] += 1
            assert row.raw == path.read_bytes(), f"raw bytes changed for {path}"
            if row.state not in ("processed", "ignored"):
                broken.append(f"{path.relative_to(corpus)}: {row.state} {row.reason}")
    assert not broken, "\n".join(broken[:20])
    return states


def test_whole_corpus_ingests_with_zero_failures_on_sqlite(corpus: Path, tmp_path: Path) -> None:
    app = make_app(tmp_path, f"sqlite:///{tmp_path / 'corpus.db'}")
    files = corpus_files(corpus)
    assert len(files) > 1900
    states = check_outcome(app, ingest_all(app, files), corpus)
    assert sum(states.values()) == len(files)
    with app.sessions() as session:
        reasons = Counter(
            (r or "").split(" ")[0] for r in session.scalars(select(RawMessage.reason))
        )
    # Measured 2026-11: 427 tickets/articles, 946 bounces, 238 list mails, 144 duplicates,
    # 187 header-less reply bodies (no sender), 17 auto-replies.
    assert states["processed"] >= 400
    assert reasons["bounce"] >= 900 and reasons["list:"] >= 200 and reasons["auto_reply:"] >= 10
    assert reasons["duplicate"] >= 100  # notmuch's corpus repeats mails across folders
    app.engine.dispose()


def test_corpus_sample_ingests_on_postgresql(corpus: Path, tmp_path: Path, pg_url: str) -> None:
    app = make_app(tmp_path, pg_url)
    files = corpus_files(corpus)[::7]  # every 7th file: all folders, a few seconds
    check_outcome(app, ingest_all(app, files), corpus)
    app.engine.dispose()


@pytest.mark.parametrize("folder", ["flufl-bounce", "sisimai-set-of-emails/maildir/bsd"])
def test_bounce_folders_are_kept_as_ignored_bounces(
    corpus: Path, tmp_path: Path, folder: str
) -> None:
    app = make_app(tmp_path, f"sqlite:///{tmp_path / 'b.db'}")
    files = corpus_files(corpus / folder)
    ingest_all(app, files)
    with app.sessions() as session:
        reasons = Counter(
            (state, (reason or "").split(" ")[0])
            for state, reason in session.execute(select(RawMessage.state, RawMessage.reason))
        )
    assert reasons[("ignored", "bounce")] / len(files) > 0.95, reasons.most_common(5)
    app.engine.dispose()
