"""Engine, sessions and schema migrations for both SQLite and PostgreSQL."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

MIGRATIONS = Path(__file__).parent / "migrations"
_REVISION = re.compile(r"""^(down_)?revision(?:: [^=]+)? = ["']?([^"'\n]*?)["']?$""", re.M)
MIGRATION_LOCK = 0x62757A6F6E  # "buzon": the PostgreSQL advisory lock key for upgrades
# A new store is created from the models in one step; what they do not describe is made
# here as the migrations made it: the search table (0003) and Alembic's version table.
_SEARCH_TABLE = {
    "postgresql": (
        "CREATE TABLE ticket_search (ticket_id INTEGER PRIMARY KEY "
        "REFERENCES tickets (id) ON DELETE CASCADE, body TEXT NOT NULL)",
        "CREATE INDEX ix_ticket_search_body ON ticket_search "
        "USING gin (to_tsvector('spanish', body))",
    ),
    "sqlite": ("CREATE VIRTUAL TABLE ticket_search USING fts5(body, tokenize='unicode61')",),
}
_VERSION_TABLE = (
    "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
    "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
)


@dataclass(frozen=True)
class DbTimeouts:
    """How long any database wait may last, so that a lost network turns into errors
    (and 451s, retries) instead of threads hung for minutes. Seconds; 0 disables one.

    PostgreSQL: `connect_timeout` bounds connection set-up; TCP keepalives find a peer
    gone silent on an idle connection and `tcp_user_timeout` one that stopped ACKing
    what we sent (a partition that drops packets without a reset); the server-side
    `statement_timeout`, `lock_timeout` and `idle_in_transaction_session_timeout` free
    locks and sessions left behind. `pool_timeout` bounds the wait for a pooled
    connection. SQLite only has its busy timeout.
    """

    connect_timeout: float = 10.0
    keepalives_idle: int = 30
    keepalives_interval: int = 10
    keepalives_count: int = 3
    tcp_user_timeout: float = 30.0
    statement_timeout: float = 120.0
    lock_timeout: float = 60.0
    idle_in_transaction_timeout: float = 120.0
    pool_timeout: float = 10.0
    sqlite_busy_timeout: float = 30.0


def make_engine(url: str, timeouts: DbTimeouts | None = None, **kwargs: Any) -> Engine:
    """An engine with the settings buzón relies on (WAL and foreign keys on SQLite,
    bounded waits on PostgreSQL)."""
    timeouts = timeouts or DbTimeouts()
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        busy = timeouts.sqlite_busy_timeout
        engine = create_engine(
            url, connect_args={"timeout": busy, "cached_statements": 0}, **kwargs
        )
        event.listen(engine, "connect", _sqlite_pragmas(int(busy * 1000)))
        # pysqlite's own transaction handling defers BEGIN; we issue it ourselves so
        # that a write transaction takes its lock up front (no upgrade deadlocks).
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        return engine
    kwargs.setdefault("pool_pre_ping", True)  # a connection killed by a partition is replaced
    kwargs.setdefault("pool_timeout", timeouts.pool_timeout)
    connect_args = {**pg_connect_args(parsed.query.get("options"), timeouts)}
    connect_args.update(kwargs.pop("connect_args", {}))
    return create_engine(url, connect_args=connect_args, **kwargs)


def pg_connect_args(url_options: str | tuple[str, ...] | None, t: DbTimeouts) -> dict[str, Any]:
    """libpq parameters: connect and TCP timeouts, and the server-side timeouts as
    start-up options (no extra round trip, and they survive a rollback). Options already
    in the URL (the tests' search_path) are kept."""
    settings = {
        "statement_timeout": t.statement_timeout,
        "lock_timeout": t.lock_timeout,
        "idle_in_transaction_session_timeout": t.idle_in_transaction_timeout,
    }
    given = " ".join([url_options] if isinstance(url_options, str) else url_options or [])
    options = " ".join([given, *(f"-c {k}={int(v * 1000)}" for k, v in settings.items())])
    args: dict[str, Any] = {
        "options": options.strip(),
        "keepalives": 1,
        "keepalives_idle": t.keepalives_idle,
        "keepalives_interval": t.keepalives_interval,
        "keepalives_count": t.keepalives_count,
        "tcp_user_timeout": int(t.tcp_user_timeout * 1000),
    }
    if t.connect_timeout:
        # libpq rounds below 2 s up to 2; 0 would mean "wait forever".
        args["connect_timeout"] = max(2, round(t.connect_timeout))
    return args


def _sqlite_pragmas(busy_millis: int) -> Any:
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # autocommit at the driver; "begin" hook above
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={busy_millis}")
        # FULL: a commit is on disk before we acknowledge the mail, power loss included.
        cur.execute("PRAGMA synchronous=FULL")
        cur.close()

    return on_connect


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str) -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest migration (idempotent). A database without any
    table is created at the newest schema at once (`create_fresh`); Alembic (a third of
    a one-shot command's start-up) is imported only to migrate an existing one."""
    if stored_revisions(engine) == head_revisions():
        return
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            # Instances starting together on one database would otherwise run the same
            # DDL at once and the loser fail (duplicate pg_type row). The lock lasts until
            # this transaction commits; the next one then finds the schema current.
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
            # A migration may rightly take longer than any one request of the service.
            conn.exec_driver_sql("SET LOCAL statement_timeout = 0")
            conn.exec_driver_sql("SET LOCAL lock_timeout = 0")
        if not inspect(conn).get_table_names():
            create_fresh(conn)
            return
        from alembic import command

        cfg = alembic_config(engine.url.render_as_string(hide_password=False))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "heads")


def create_fresh(conn: Connection) -> None:
    """An empty database made the newest schema in one step: the models' tables, the
    search table, and Alembic's version table stamped at the head. Running every
    migration instead took a second or two of a first start (tests/test_migrations.py
    shows both give the same schema)."""
    from tickets.models import Base

    Base.metadata.create_all(conn)
    for statement in _SEARCH_TABLE[conn.dialect.name]:
        conn.exec_driver_sql(statement)
    conn.exec_driver_sql(_VERSION_TABLE)
    for revision in sorted(head_revisions()):
        conn.execute(text("INSERT INTO alembic_version (version_num) VALUES (:v)"), {"v": revision})


def schema_is_current(engine: Engine) -> bool:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    heads = set(ScriptDirectory.from_config(alembic_config(str(engine.url))).get_heads())
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return False
        return set(MigrationContext.configure(conn).get_current_heads()) == heads


@cache
def head_revisions() -> frozenset[str]:
    """The newest migrations' ids, read from the migration files' `revision` and
    `down_revision` lines: the same answer as Alembic's, without importing it."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        for down, value in _REVISION.findall(path.read_text(encoding="utf-8")):
            if value and value != "None":
                (parents if down else revisions).add(value)
    return frozenset(revisions - parents)


def stored_revisions(engine: Engine) -> frozenset[str] | None:
    """The revisions the database says it is at; None when it cannot say (no table yet)."""
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table("alembic_version"):
                return None
            rows = conn.execute(text("SELECT version_num FROM alembic_version"))
            return frozenset(row[0] for row in rows)
    except SQLAlchemyError:
        return None  # Alembic then says what is wrong, as it always did
