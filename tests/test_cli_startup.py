"""A one-shot command imports what it needs, when it needs it: `buzon tickets list` starts
without the SMTP, IMAP, scheduler, template, migration, web and parsing stacks, the
holiday calendars (its due times are stored columns) or a database dialect it does not
use."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.helpers import buzon, python_child
from tickets.db import head_revisions, make_engine, stored_revisions

HEAVY = (
    "aiosmtpd",
    "imapclient",
    "apscheduler",
    "jinja2",
    "alembic",
    "uvicorn",
    "starlette",
    "mailparser",
    "parsers",  # buzón's own mail parsing, with charset_normalizer and html
    "holidays",
)
# On SQLite: PostgreSQL's dialect package imports its four drivers' modules.
UNUSED_DIALECT = "sqlalchemy.dialects.postgresql"
# The command as the `buzon` script runs it, or called in process as a host (a test) does;
# then what the process holds.
_AS_PROGRAM = """
from daemon.cli import entry
sys.argv = ["buzon", *sys.argv[1:]]
try:
    entry()
except SystemExit as exc:
    assert not exc.code, exc.code
"""
_IN_PROCESS = """
from daemon.cli.root import main
main(sys.argv[1:], prog_name="buzon", standalone_mode=False)
"""
_REPORT = """
import gc
from tickets.models import Ticket
print(json.dumps({"modules": sorted(sys.modules), "mapped": Ticket.__mapper__.configured,
                  "frozen": gc.get_freeze_count()}), file=sys.stderr)
"""


def _child(args: list[str], workdir: Path, run: str = _AS_PROGRAM) -> dict[str, Any]:
    child = python_child("import json, sys\n" + run + _REPORT, args, workdir)
    assert child.returncode == 0, child.stderr[-2000:]
    result: dict[str, Any] = json.loads(child.stderr.splitlines()[-1])
    return result


def _modules(args: list[str], workdir: Path) -> set[str]:
    """Every module the command left in sys.modules, dotted names and their packages."""
    names = set(_child(args, workdir)["modules"])
    return names | {name.partition(".")[0] for name in names}


def test_tickets_list_imports_none_of_the_heavy_stacks(tmp_path: Path) -> None:
    created = buzon(["db", "upgrade"], tmp_path)  # the schema is current, as in service
    assert created.returncode == 0, created.stderr
    loaded = _modules(["tickets", "list"], tmp_path)
    assert "sqlalchemy.dialects.sqlite" in loaded  # it did read the database
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))
    assert UNUSED_DIALECT not in loaded


def test_tickets_list_reads_the_table_without_configuring_the_mappers(tmp_path: Path) -> None:
    mail = "From: ana@cliente.example\nTo: soporte@soporte.example\nSubject: Sin luz\n\nHola.\n"
    assert buzon(["ingest"], tmp_path, stdin=mail).returncode == 0
    child = _child(["tickets", "list", "--json"], tmp_path)
    assert child["mapped"] is False  # no relationship of any model was set up
    listed = json.loads(buzon(["tickets", "list", "--json"], tmp_path).stdout)
    assert [(t["number"], t["subject"], t["requester"]) for t in listed] == [
        (1, "Sin luz", "ana@cliente.example")
    ]
    assert listed[0]["first_response_due_at"]  # the stored SLA due time, as before


def test_tickets_list_spares_its_exit_the_collection_but_still_closes_the_database(
    tmp_path: Path,
) -> None:
    assert buzon(["db", "upgrade"], tmp_path).returncode == 0
    child = _child(["tickets", "list"], tmp_path)
    assert child["frozen"] > 10_000  # the imported modules' objects, out of gc's walk
    # Its connection was not frozen with them: closed at exit, SQLite's last connection
    # checkpoints and removes the WAL files.
    assert sorted(p.name for p in (tmp_path / "data").glob("buzon.db*")) == ["buzon.db"]
    # Freezing acts on the whole process: a host calling the group in process keeps its
    # collector as it was.
    assert _child(["tickets", "list"], tmp_path, run=_IN_PROCESS)["frozen"] == 0


def test_a_new_database_is_created_at_the_newest_schema_without_alembic(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    loaded = _modules(["tickets", "list"], tmp_path)
    assert "alembic" not in loaded  # created from the models, stamped at the head
    engine = make_engine(f"sqlite:///{tmp_path / 'data' / 'buzon.db'}")
    assert stored_revisions(engine) == head_revisions()
    engine.dispose()
    listed = buzon(["tickets", "list"], tmp_path)
    assert listed.returncode == 0, listed.stderr


def test_every_command_is_still_listed(tmp_path: Path) -> None:
    result = buzon(["--help"], tmp_path)
    assert result.returncode == 0
    for name in ("config", "db", "doctor", "inbound", "ingest", "run", "smtp", "tickets"):
        assert f"  {name} " in result.stdout
