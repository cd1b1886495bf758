"""Issue 18, the command line as ops and an MTA meet it: the pipe never bounces before
the commit, one-shot commands never invent a database, `--version`, quiet one-shot logs,
JSON log fields."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.cli.pipe import is_pipe
from daemon.logs import JsonFormatter
from tests.mailbuilder import mail

BUZON = [sys.executable, "-m", "daemon"]
RAW = mail("Ana <ana@clinica.example>", "No carga", "Hola, no carga.", to="soporte@localhost")


def buzon(
    args: list[str], cwd: Path, stdin: bytes | None = None, **env: str
) -> subprocess.CompletedProcess[bytes]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("BUZON_")}
    environment.update(env)
    return subprocess.run(
        [*BUZON, *args], cwd=cwd, input=stdin, capture_output=True, timeout=60, env=environment
    )


def config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "buzon.toml"
    path.write_text(body, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "body",
    [
        "data_dir = 5\n",  # invalid: 78 elsewhere
        "this is not toml\n",
        "support_addresses = []\n",
        '[smtp]\nlisten = "nowhere"\n',
    ],
)
def test_the_pipe_defers_on_every_config_error(tmp_path: Path, body: str) -> None:
    done = buzon(["ingest", "--config", str(config(tmp_path, body))], tmp_path, RAW)
    assert done.returncode == 75
    err = done.stderr.decode()
    assert err.count("\n") == 1 and "configuration error" in err
    assert str(tmp_path) not in err  # nothing for a bounce to quote to the customer


def test_the_pipe_defers_on_an_unreadable_config_a_missing_one_and_bad_usage(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "a-directory.toml"
    folder.mkdir()
    for args in (
        ["ingest", "--config", str(folder)],
        ["ingest", "--config", str(tmp_path / "absent.toml")],
        ["--config", str(tmp_path / "absent.toml"), "ingest"],
        ["ingest", "--no-such-option"],
        ["ingest", str(tmp_path / "no-such-file")],
    ):
        done = buzon(args, tmp_path, RAW)
        assert done.returncode == 75, (args, done.stderr)
        assert done.stderr.decode().count("\n") == 1, done.stderr


def test_the_pipe_defers_when_the_store_cannot_be_opened(tmp_path: Path) -> None:
    (tmp_path / "blocked").write_text("a file where the data dir should be")
    cfg = config(tmp_path, f'data_dir = "{tmp_path / "blocked"}"\n')
    done = buzon(["ingest", "--config", str(cfg)], tmp_path, RAW)
    assert done.returncode == 75


def test_the_pipe_defers_when_a_configured_data_dir_is_missing(tmp_path: Path) -> None:
    cfg = config(tmp_path, f'data_dir = "{tmp_path / "missing"}"\n')
    assert buzon(["ingest", "--config", str(cfg)], tmp_path, RAW).returncode == 75
    assert not (tmp_path / "missing").exists()


def test_one_shot_commands_refuse_a_configured_data_dir_that_does_not_exist(
    tmp_path: Path,
) -> None:
    cfg = config(tmp_path, 'data_dir = "relative-data"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = buzon(["tickets", "list", "--config", str(cfg)], elsewhere)
    assert done.returncode == 78
    err = done.stderr.decode()
    assert err.count("\n") == 1 and "data_dir relative-data" in err and "does not exist" in err
    assert not (elsewhere / "relative-data").exists()
    # `db upgrade` creates it on purpose; then the same command works.
    assert buzon(["db", "upgrade", "--config", str(cfg)], elsewhere).returncode == 0
    listed = buzon(["tickets", "list", "--config", str(cfg)], elsewhere)
    assert listed.returncode == 0 and b"no tickets" in listed.stdout


def test_the_embedded_default_still_creates_its_data_dir(tmp_path: Path) -> None:
    done = buzon(["ingest"], tmp_path, RAW)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "buzon-data" / "buzon.db").exists()


def test_a_stored_mail_is_acknowledged_and_one_shot_commands_log_no_info(tmp_path: Path) -> None:
    done = buzon(["ingest"], tmp_path, RAW)
    assert done.returncode == 0
    assert b" INFO " not in done.stderr  # the pipe's and agents' output stays clean
    shown = buzon(["tickets", "list"], tmp_path)
    assert shown.stderr == b"" and b"No carga" in shown.stdout


def test_version(tmp_path: Path) -> None:
    done = buzon(["--version"], tmp_path)
    assert done.returncode == 0 and done.stdout.decode().startswith("buzon ")


def test_is_pipe_tells_the_pipe_from_a_backfill() -> None:
    assert is_pipe(["ingest"])
    assert is_pipe(["--config", "/etc/buzon/buzon.toml", "ingest", "-"])
    assert is_pipe(["ingest", "--config", "x"])
    assert not is_pipe(["ingest", "--maildir", "/tmp/m"])
    assert not is_pipe(["ingest", "--mbox=/tmp/m"])
    assert not is_pipe(["tickets", "list"])
    assert not is_pipe(["--version"])


def test_json_logs_carry_the_named_values_as_fields() -> None:
    record = logging.makeLogRecord(
        {
            "name": "buzon.delivery",
            "levelname": "INFO",
            "msg": "outbox=%s deferred (attempt %d): %s",
            "args": (7, 2, "451 4.3.0 try later token=abc"),
        }
    )
    entry = json.loads(JsonFormatter().format(record))
    assert entry["outbox"] == 7
    assert entry["msg"].startswith("outbox=7 deferred")
    assert "token" not in entry  # a server's text never becomes a field
    secret = logging.makeLogRecord({"msg": "login password=%s", "args": ("hunter2",)})
    assert "password" not in json.loads(JsonFormatter().format(secret))


def test_tickets_show_local_time_numbers_per_ticket_created_first_and_the_rating(
    tmp_path: Path,
) -> None:
    from daemon.config import load_settings
    from daemon.wiring import App
    from tickets.models import Ticket

    first = mail("Ana <ana@clinica.example>", "Uno", "Hola.", to="soporte@localhost")
    second = mail(
        "Luis <luis@clinica.example>",
        "Dos",
        "Hola.",
        to="soporte@localhost",
        cc="Eva <eva@clinica.example>",
    )
    assert buzon(["ingest"], tmp_path, first).returncode == 0
    assert buzon(["ingest"], tmp_path, second).returncode == 0
    app = App(load_settings(None, data_dir=tmp_path / "buzon-data"))
    with app.sessions.begin() as session:
        ticket = session.get(Ticket, 2)
        assert ticket is not None
        ticket.survey_rating, ticket.survey_comment = 4, "rápido"
    app.engine.dispose()
    shown = buzon(["tickets", "show", "2"], tmp_path).stdout.decode()
    thread = shown.split("thread:")[1].split("history:")[0]
    assert "  [1] " in thread and "  [2] " in thread and "  [3] " not in thread
    assert re.search(r"\[1\] \d{4}-\d\d-\d\d \d\d:\d\d CST inbound", thread), thread
    history = shown.split("history:")[1].strip().splitlines()
    assert " created by luis@clinica.example" in history[0], history
    assert "." not in history[0].split(" created")[0]  # no microseconds
    assert "survey rating 4/5 «rápido»" in shown


def test_a_busy_smtp_port_is_a_config_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = config(
            tmp_path,
            f'data_dir = "{tmp_path / "d"}"\n[smtp]\nlisten = "127.0.0.1:{port}"\n'
            "[http]\nenabled = false\n",
        )
        done = buzon(["smtp", "--config", str(cfg)], tmp_path)
    assert done.returncode == 78, done.stderr
    err = done.stderr.decode()
    assert err.count("\n") == 1 and f"smtp.listen 127.0.0.1:{port}" in err


def test_doctor_reports_a_configured_data_dir_that_does_not_exist(tmp_path: Path) -> None:
    cfg = config(tmp_path, f'data_dir = "{tmp_path / "missing"}"\n')
    done = buzon(["doctor", "--config", str(cfg)], tmp_path)
    assert done.returncode == 1
    assert b"data_dir: FAIL: " in done.stdout and b"does not exist" in done.stdout
    assert not (tmp_path / "missing").exists()
