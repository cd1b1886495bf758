"""What every part of the wire-speed benchmark shares: buzón's config file, a private
PostgreSQL database, reading buzón's tables from outside, and the processes it starts.

Only public entry points: the `buzon` CLI (as `python -m daemon`), its TOML config and
the tables (`raw_messages`, `tickets`, `outbox`). Network: 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

ROOT = Path(__file__).resolve().parents[1]
# The SMTP client of bench/smtp_intake.py sends RCPT TO this address; the generated mails
# are addressed to the second one. Both are ours, so the mails are processed as in use.
SUPPORT = ("soporte@soporte.example", "soporte@helpdesk.example.com")
PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
# The generated mails are dated 2025: without this, buzón would take them for mail from
# long ago and open their tickets without an acknowledgement. An environment variable
# rather than a TOML key, so that `--extra-toml` may hold an [ingest] table of its own.
BUZON_ENV = {"BUZON_INGEST__ACKNOWLEDGE_MAX_AGE_HOURS": "1000000"}
_db_numbers = itertools.count()


def loadavg() -> float:
    """The 1-minute load average now (the machine is shared: every record carries it)."""
    return round(os.getloadavg()[0], 2)


def buzon_toml(root: Path, db_url: str | None = None, extra: str = "") -> Path:
    """A config file for one run: its own data dir (SQLite there unless `db_url`), no
    HTTP endpoint (its default port would clash between runs), `extra` TOML appended
    (e.g. a setting a later commit adds, or an [[imap.mailboxes]] entry)."""
    lines = [
        f'data_dir = "{root / "data"}"',
        *([f'database_url = "{db_url}"'] if db_url else []),
        f"support_addresses = {list(SUPPORT)!r}".replace("'", '"'),
        'secret_key = "wire-speed-bench-0123456789"',
        "[log]",
        'level = "WARNING"',
        "[http]",
        "enabled = false",
        "[smtp]",
        "max_messages_per_connection = 100000",
    ]
    path = root / "buzon.toml"
    root.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n" + extra + "\n")
    return path


@contextlib.contextmanager
def pg_database(admin_url: str) -> Iterator[str]:
    """A fresh database `bench_<pid>_<n>` on the server of `admin_url`, dropped after:
    the tests' database is never touched."""
    name = f"bench_{os.getpid()}_{next(_db_numbers)}"
    assert re.fullmatch(r"bench_\d+_\d+", name)
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


class Store:
    """buzón's tables read from outside its process (SQLite read-only, or PostgreSQL)."""

    def __init__(self, url: str) -> None:
        if url.startswith("sqlite:///"):
            path = url.removeprefix("sqlite:///")
            url = f"sqlite:///file:{path}?mode=ro&uri=true"
        self.engine: Engine = create_engine(url)

    def scalar(self, sql: str) -> int | None:
        try:
            with self.engine.connect() as conn:
                return conn.execute(text(sql)).scalar()
        except Exception:  # noqa: BLE001 - not created yet, or locked: asked again later
            return None

    def states(self) -> dict[str, int]:
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(text("SELECT state, count(*) FROM raw_messages GROUP BY 1"))
                return {str(state): int(n) for state, n in rows}
        except Exception:  # noqa: BLE001 - as above
            return {}

    def counts(self) -> dict[str, int | None]:
        return {
            "tickets": self.scalar("SELECT count(*) FROM tickets"),
            "outbox": self.scalar("SELECT count(*) FROM outbox"),
        }

    def wait_processed(self, n: int, proc: subprocess.Popen[bytes] | None, timeout: float) -> bool:
        """Until `n` rows are stored and none is pending or claimed; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"buzón exited early with {proc.returncode}")
            states = self.states()
            busy = states.get("pending", 0) + states.get("processing", 0)
            if sum(states.values()) >= n and not busy:
                return True
            time.sleep(0.1)
        return False

    def close(self) -> None:
        self.engine.dispose()


def buzon_cmd(python: str, config: Path, *args: str) -> list[str]:
    return [python, "-m", "daemon", *args, "--config", str(config)]


@contextlib.contextmanager
def buzon_process(
    python: str, command: str, root: Path, db_url: str | None, extra: str, *args: str
) -> Iterator[tuple[subprocess.Popen[bytes], Store]]:
    """A `buzon COMMAND` of its own config in `root` (log in root/buzon.log), with a
    reader of its tables; stopped when the block ends."""
    config = buzon_toml(root, db_url, extra)
    store = Store(db_url or f"sqlite:///{root / 'data' / 'buzon.db'}")
    with (root / "buzon.log").open("wb") as log:
        proc = subprocess.Popen(
            [*buzon_cmd(python, config, command), *args], stdout=log, stderr=log
        )
    try:
        yield proc, store
    finally:
        stop(proc)
        store.close()


def stop(proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """SIGTERM a process this benchmark started (by its own handle), SIGKILL if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (worker processes count towards its memory)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                todo += [int(x) for x in task.read_text().split()]
    return found


def rss_mb(pid: int, field: str = "VmHWM") -> float:
    """A memory figure of a live process tree, summed (VmHWM: peak, VmRSS: now)."""
    total = 0
    for p in descendants(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    total += int(line.split()[1])
    return round(total / 1024, 1)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process tree (and of the children it reaped)."""
    ticks = 0
    for p in descendants(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += sum(int(f) for f in fields[11:15])
    return round(ticks / os.sysconf("SC_CLK_TCK"), 2)


def machine() -> str:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return f"nproc {os.cpu_count()}, {cpu}"
