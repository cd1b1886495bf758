"""Shared fixtures: databases (SQLite and PostgreSQL), an App on a temp data dir.

A server that is absent makes its tests skip with a loud reason, and in CI
(CI=true) it makes them fail instead: CI must never go green by skipping.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from daemon.app import App
from daemon.config import load_settings

PG_URL = os.environ.get("BUZON_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() == "true"
CORPUS = Path(
    os.environ.get("BUZON_CORPUS", Path(__file__).resolve().parents[2] / "shared" / "corpus")
)

_missing: set[str] = set()


def missing_server(name: str, why: str) -> None:
    """Skip loudly, or fail in CI, when a server the test needs is absent."""
    _missing.add(f"{name}: {why}")
    if IN_CI:
        pytest.fail(f"{name} is required in CI but unavailable: {why}", pytrace=False)
    pytest.skip(f"SERVER MISSING - {name}: {why}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _missing:
        terminalreporter.section("SERVERS MISSING: tests below did not run", sep="!", red=True)
        for line in sorted(_missing):
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


def make_app(tmp_path: Path, db_url: str, **overrides: object) -> App:
    settings = load_settings(
        None,
        data_dir=tmp_path / "data",
        database_url=db_url,
        secret_key="test-secret",
        **overrides,
    )
    app = App(settings)
    app.prepare()
    return app


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
