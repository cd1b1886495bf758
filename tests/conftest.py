"""Shared fixtures: databases (SQLite and PostgreSQL), an App on a temp data dir, and the
fixture modules of tests/fixtures/ registered as plugins (their fixtures are used by name).

A server that is absent makes its tests skip with a loud reason, and in CI
(CI=true) it makes them fail instead: CI must never go green by skipping.
Plain helpers shared by test modules are in tests/helpers.py, never imported from here.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from daemon.wiring import App

# Asserts in the shared helpers report like asserts in tests: registered before the import.
pytest.register_assert_rewrite("tests.helpers")
from tests.helpers import IN_CI, make_app, missing, missing_server  # noqa: E402

# Imported in this order, each before anything imports it, so pytest rewrites their asserts.
pytest_plugins = [
    "tests.fixtures.smtp_sink",
    "tests.fixtures.apps",
    "tests.fixtures.dovecot",
    "tests.fixtures.smtp_listener",
    "tests.fixtures.postfix",
    "tests.fixtures.console_service",
    "tests.fixtures.http_receiver",
]

PG_URL = os.environ.get("BUZON_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
CORPUS = Path(
    os.environ.get("BUZON_CORPUS", Path(__file__).resolve().parents[2] / "shared" / "corpus")
)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if missing:
        terminalreporter.section("SERVERS MISSING: tests below did not run", sep="!", red=True)
        for line in sorted(missing):
            terminalreporter.write_line(f"  {line}", red=True)


def _pg_available() -> str | None:
    try:
        engine = create_engine(PG_URL)
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
        return None
    except OperationalError as exc:
        return str(exc.orig).splitlines()[0] if exc.orig else str(exc)


@pytest.fixture(scope="session")
def pg_reachable() -> str | None:
    return _pg_available()


@pytest.fixture
def pg_url(pg_reachable: str | None) -> Iterator[str]:
    """A PostgreSQL URL pointing at a fresh schema that is dropped afterwards."""
    if pg_reachable is not None:
        missing_server("PostgreSQL", f"{PG_URL.split('@')[-1]}: {pg_reachable}")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'buzon.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def app(tmp_path: Path, db_url: str) -> Iterator[App]:
    """An App on both databases (the test runs once per database)."""
    application = make_app(
        tmp_path,
        db_url,
        agents=["agente@soporte.example"],
        support_addresses=["soporte@soporte.example"],
    )
    yield application
    application.engine.dispose()


@pytest.fixture
def sqlite_app(tmp_path: Path) -> Iterator[App]:
    application = make_app(
        tmp_path,
        f"sqlite:///{tmp_path / 'buzon.db'}",
        agents=["agente@soporte.example"],
        support_addresses=["soporte@soporte.example"],
    )
    yield application
    application.engine.dispose()


@pytest.fixture
def corpus() -> Path:
    if not CORPUS.is_dir():
        if IN_CI:
            pytest.fail(f"corpus folder {CORPUS} is required in CI", pytrace=False)
        pytest.skip(f"CORPUS MISSING - {CORPUS} is absent (set BUZON_CORPUS)")
    return CORPUS
