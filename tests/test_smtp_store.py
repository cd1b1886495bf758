"""The intake's group commit and its turns at SQLite's write lock with the workers.

Real SQLite in WAL mode; the lock is held by a second connection, as a worker holds it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import make_url

from daemon.intake.smtp_store import IntakeStore, SharedWriteGate
from tests.helpers import make_app
from tests.mailbuilder import mail
from tickets.db import make_engine


def _store(tmp_path: Path) -> tuple[IntakeStore, str]:
    url = f"sqlite:///{tmp_path / 'buzon.db'}"
    make_app(tmp_path, url).engine.dispose()  # the schema
    return IntakeStore(url, "smtp", timeout=10.0), make_url(url).database or ""


def test_mails_that_arrive_while_a_worker_holds_the_lock_share_one_commit(
    tmp_path: Path,
) -> None:
    store, path = _store(tmp_path)
    commits: list[int] = []
    event.listen(store.engine, "commit", lambda _conn: commits.append(1))
    worker = sqlite3.connect(path, isolation_level=None)
    worker.execute("BEGIN IMMEDIATE")

    async def burst() -> list[int]:
        mails = [mail("ana@clinica.example", f"Consulta {n}", "Hola.") for n in range(6)]
        first = asyncio.create_task(store(mails[0], {}))
        await asyncio.sleep(0.05)  # the writer waits for the lock with the first mail
        rest = [asyncio.create_task(store(raw, {})) for raw in mails[1:]]
        await asyncio.sleep(0.05)
        worker.execute("COMMIT")
        ids = await asyncio.gather(first, *rest)
        await store.aclose()
        return ids

    ids = asyncio.run(burst())
    worker.close()
    assert ids == list(range(ids[0], ids[0] + 6))  # every mail stored, in arrival order
    assert len(commits) == 1  # the five that came during the wait joined the first


def test_workers_stand_back_while_a_burst_is_accepted(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'gate.db'}")
    gate = SharedWriteGate(max_wait=1.0, quiet=0.2)
    gate.install(engine)
    try:
        with gate.intake_turn():
            pass
        start = time.monotonic()
        with engine.connect():
            waited = time.monotonic() - start
        assert 0.15 <= waited < 0.9  # the quiet time after the intake's last commit

        start = time.monotonic()
        with engine.connect():  # after the quiet time: at once
            assert time.monotonic() - start < 0.1

        bursting = threading.Event()

        def burst() -> None:  # an intake committing every 50 ms, without a lull
            while not bursting.is_set():
                with gate.intake_turn():
                    time.sleep(0.01)
                time.sleep(0.04)

        thread = threading.Thread(target=burst)
        thread.start()
        try:
            start = time.monotonic()
            with engine.connect():
                waited = time.monotonic() - start
        finally:
            bursting.set()
            thread.join()
        assert 0.9 <= waited < 1.5  # bounded by max_wait: processing never stops
    finally:
        gate.uninstall()
        engine.dispose()
