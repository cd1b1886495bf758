"""The repository's supervisord.conf, run for real on a temp dir: mail in, a SIGKILL that
loses nothing, and a SIGTERM stop that ends cleanly (exit status 0, state STOPPED)."""

from __future__ import annotations

import configparser
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.service import http_get, send_mail, wait_for, write_config
from tests.helpers import free_port, missing_server

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SUPERVISORD, SUPERVISORCTL = BIN / "supervisord", BIN / "supervisorctl"


@pytest.fixture(autouse=True)
def _supervisord_installed() -> None:
    if not SUPERVISORD.exists():
        missing_server("supervisord", f"{SUPERVISORD} absent (pip install -e '.[test]')")


def _adapted_conf(tmp_path: Path, config: Path, http_port: int) -> Path:
    """The repo's file with paths, socket, log files, command and user made local."""
    conf = configparser.RawConfigParser(inline_comment_prefixes=(";",))
    conf.read(ROOT / "supervisord.conf")
    sock = tmp_path / "supervisor.sock"
    conf["supervisord"].update(
        nodaemon="true",
        logfile=str(tmp_path / "supervisord.log"),
        pidfile=str(tmp_path / "supervisord.pid"),
        childlogdir=str(tmp_path),
        loglevel="info",
    )
    conf["unix_http_server"]["file"] = str(sock)
    conf["supervisorctl"]["serverurl"] = f"unix://{sock}"
    program = conf["program:buzon"]
    program["command"] = f"{BIN / 'buzon'} run --config {config} --http 127.0.0.1:{http_port}"
    program["directory"] = str(tmp_path)
    program.pop("user", None)  # the test runs as whoever runs it
    program["stdout_logfile"] = str(tmp_path / "buzon.log")
    path = tmp_path / "supervisord.conf"
    with path.open("w") as out:
        conf.write(out)
    return path


class Supervisor:
    def __init__(self, conf: Path, log: Path) -> None:
        self.conf, self.log = conf, log
        self.proc = subprocess.Popen(
            [SUPERVISORD, "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def ctl(self, *args: str) -> str:
        done = subprocess.run(
            [SUPERVISORCTL, "-c", self.conf, *args], capture_output=True, text=True, timeout=60
        )
        return done.stdout.strip()

    def state(self) -> str:
        parts = self.ctl("status", "buzon").split()
        return parts[1] if len(parts) > 1 else ""

    def pid(self) -> int:
        text = self.ctl("pid", "buzon")
        return int(text) if text.isdigit() else 0

    def shutdown(self) -> None:
        """Ends supervisord by its pid (it stops buzón first)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)


@pytest.fixture
def supervised(tmp_path: Path) -> Iterator[tuple[Supervisor, int, int, Path]]:
    smtp_port, http_port = free_port(), free_port()
    db = f"sqlite:///{tmp_path / 'buzon.db'}"
    config = write_config(tmp_path / "buzon.toml", tmp_path / "data", db, smtp_port)
    supervisor = Supervisor(_adapted_conf(tmp_path, config, http_port), tmp_path / "buzon.log")
    try:
        wait_for(lambda: supervisor.state() == "RUNNING", 30, "buzon RUNNING")
        wait_for(lambda: http_get(http_port, "/readyz")[0] == 200, 30, "buzon ready")
        yield supervisor, smtp_port, http_port, config
    finally:
        supervisor.shutdown()


def _tickets(config: Path) -> list[dict[str, object]]:
    done = subprocess.run(
        [BIN / "buzon", "tickets", "list", "--json", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("BUZON_")},
    )
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout))


def _subjects(config: Path) -> set[str]:
    return {str(t["subject"]) for t in _tickets(config)}


@pytest.mark.slow
def test_supervisord_runs_restarts_and_stops_buzon(
    supervised: tuple[Supervisor, int, int, Path], tmp_path: Path
) -> None:
    supervisor, smtp_port, http_port, config = supervised
    send_mail(smtp_port, "Primera consulta")
    wait_for(lambda: "Primera consulta" in _subjects(config), 30, "the first ticket")

    # A burst, then SIGKILL right after the last 250: whatever was accepted but not yet
    # processed must be processed after the restart. (Freezing the process instead can
    # leave it holding SQLite's write lock, which a test cannot wait out reliably.)
    first_pid = supervisor.pid()
    burst = {f"Consulta {n}" for n in range(2, 12)}
    for subject in sorted(burst):
        send_mail(smtp_port, subject)
    os.kill(first_pid, signal.SIGKILL)

    wait_for(
        lambda: supervisor.pid() not in (0, first_pid) and supervisor.state() == "RUNNING",
        30,
        "supervisord to restart buzon",
    )
    wait_for(
        lambda: burst <= _subjects(config),
        30,
        "the mail accepted before the kill to be processed after the restart",
    )
    assert len(_tickets(config)) == 1 + len(burst)
    wait_for(lambda: http_get(http_port, "/readyz")[0] == 200, 30, "ready after restart")

    assert "buzon: stopped" in supervisor.ctl("stop", "buzon")
    assert supervisor.state() == "STOPPED"
    log = (tmp_path / "supervisord.log").read_text()
    assert "stopped: buzon (exit status 0)" in log, log
    assert "stopped cleanly" in supervisor.log.read_text()
