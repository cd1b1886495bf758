"""A database without any table is created from the models and stamped at the newest
migration in one step (tickets.db.upgrade); that schema is the one the migrations give,
run one by one from nothing or from an older store, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from sqlalchemy import Engine, inspect, text

from tickets.db import alembic_config, head_revisions, make_engine, stored_revisions, upgrade


def _migrate(engine: Engine, target: str) -> None:
    """Alembic's migrations, one after the other, to `target` (the old way for all)."""
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, target)


def _engine(db_url: str, tmp_path: Path, name: str) -> Engine:
    """An empty database: on SQLite a file of its own, on PostgreSQL the test's schema
    emptied (its search_path is in the URL)."""
    if db_url.startswith("sqlite"):
        return make_engine(f"sqlite:///{tmp_path / name}.db")
    engine = make_engine(db_url)
    with engine.begin() as conn:
        schema = conn.execute(text("SELECT current_schema()")).scalar_one()
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    return engine


def _schema(engine: Engine) -> dict[str, Any]:
    """Every table with its columns, keys, indexes and constraints, as the database says."""
    with engine.connect() as conn:
        found = inspect(conn)
        tables: dict[str, Any] = {}
        for table in sorted(found.get_table_names()):
            tables[table] = {
                # By name: a migration appends the columns it adds, the models place
                # them among the others; every statement names its columns.
                "columns": sorted(
                    (c["name"], str(c["type"]), c["nullable"], c.get("default"))
                    for c in found.get_columns(table)
                ),
                "primary": found.get_pk_constraint(table)["constrained_columns"],
                "foreign": sorted(
                    (
                        tuple(f["constrained_columns"]),
                        f["referred_table"],
                        tuple(f["referred_columns"]),
                        tuple(sorted(f["options"].items())),
                    )
                    for f in found.get_foreign_keys(table)
                ),  # fmt: skip
                "indexes": sorted(
                    (
                        i["name"],
                        tuple(map(str, i["column_names"])),
                        i["unique"],
                        tuple(map(str, i.get("expressions", ()))),
                    )
                    for i in found.get_indexes(table)
                ),  # fmt: skip
                "unique": sorted(
                    (u["name"], tuple(u["column_names"]))
                    for u in found.get_unique_constraints(table)
                ),
                "checks": sorted(str(c["sqltext"]) for c in found.get_check_constraints(table)),
            }
        rows = conn.execute(text("SELECT version_num FROM alembic_version")).scalars()
        return {"tables": tables, "version": sorted(rows)}


def test_a_new_database_gets_the_schema_every_migration_gives(db_url: str, tmp_path: Path) -> None:
    migrated = _engine(db_url, tmp_path, "migrated")
    _migrate(migrated, "heads")
    expected = _schema(migrated)
    migrated.dispose()

    fresh = _engine(db_url, tmp_path, "fresh")
    upgrade(fresh)
    assert _schema(fresh) == expected
    assert "ticket_search" in expected["tables"] and "tickets" in expected["tables"]
    assert stored_revisions(fresh) == head_revisions()
    upgrade(fresh)  # current: nothing to do
    fresh.dispose()


def test_a_database_with_tables_is_still_migrated(db_url: str, tmp_path: Path) -> None:
    """An older store (here at 0004) is brought to the head by the migrations."""
    older = _engine(db_url, tmp_path, "older")
    _migrate(older, "0004")
    with older.connect() as conn:
        assert "plan" not in {c["name"] for c in inspect(conn).get_columns("outbox")}
    assert stored_revisions(older) == {"0004"}
    upgrade(older)
    assert stored_revisions(older) == head_revisions()
    upgraded = _schema(older)
    older.dispose()

    fresh = _engine(db_url, tmp_path, "fresh")
    upgrade(fresh)
    assert upgraded == _schema(fresh)
    fresh.dispose()
