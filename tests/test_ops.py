"""Running buzón as a service: /healthz /readyz /metrics of a real `buzon run`, readiness
following the database, `buzon doctor`, exit 78 on configuration errors, the example
config."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import BaseModel

from daemon.cli import main
from daemon.config import ImapMailbox, Settings, SlaTargetConfig, load_settings
from daemon.logs import JsonFormatter, configure
from tests.fixtures.dovecot import Dovecot
from tests.fixtures.service import (
    Forwarder,
    buzon_run,
    http_get,
    samples,
    send_mail,
    wait_for,
    write_config,
)
from tests.helpers import free_port

ROOT = Path(__file__).resolve().parents[1]


def test_metrics_move_when_mail_arrives(tmp_path: Path) -> None:
    smtp_port, http_port = free_port(), free_port()
    config = write_config(
        tmp_path / "buzon.toml", tmp_path / "data", f"sqlite:///{tmp_path / 'b.db'}", smtp_port
    )
    with buzon_run(config, http_port, tmp_path / "buzon.log") as proc:
        assert http_get(http_port, "/healthz")[0] == 200
        status, body = http_get(http_port, "/readyz")
        assert '"database": "ok"' in body and '"smtp": "ok"' in body
        before = samples(http_port)
        send_mail(smtp_port, "No carga la agenda")
        processed = ("buzon_messages_processed_total", (("state", "processed"),))
        wait_for(lambda: samples(http_port).get(processed, 0) >= 1, 20, "the mail to be processed")
        after = samples(http_port)
        proc.terminate()
        assert proc.wait(30) == 0
    accepted = ("buzon_messages_accepted_total", (("source", "smtp"),))
    assert after[accepted] - before.get(accepted, 0) == 1
    sessions = ("buzon_smtp_sessions_total", ())
    assert after[sessions] - before[sessions] >= 1
    assert after[("buzon_raw_messages", (("source", "smtp"), ("state", "processed")))] == 1
    assert after[("buzon_tickets", (("level", "1"), ("status", "new")))] == 1
    assert after[("buzon_ready", ())] == 1
    assert ("buzon_quarantine_size", ()) in after
    assert "stopped cleanly" in (tmp_path / "buzon.log").read_text()


def test_readyz_follows_the_database(tmp_path: Path, pg_url: str) -> None:
    """PostgreSQL behind a forwarder we can cut: 503 while it is away, 200 once back."""
    real_port = int(re.search(r"@[^:/]+:(\d+)/", pg_url).group(1))  # type: ignore[union-attr]
    forwarder = Forwarder(("127.0.0.1", real_port))
    forwarder.start()
    url = re.sub(r"(@[^:/]+:)\d+/", rf"\g<1>{forwarder.port}/", pg_url)
    config = write_config(tmp_path / "buzon.toml", tmp_path / "data", url, free_port())
    http_port = free_port()
    try:
        with buzon_run(config, http_port, tmp_path / "buzon.log"):
            forwarder.stop()
            wait_for(lambda: http_get(http_port, "/readyz")[0] == 503, 20, "503 without db")
            assert '"database": "FAIL' in http_get(http_port, "/readyz")[1]
            assert http_get(http_port, "/healthz")[0] == 200  # alive all the same
            forwarder.start()
            wait_for(lambda: http_get(http_port, "/readyz")[0] == 200, 20, "200 with db back")
    finally:
        forwarder.stop()


def test_a_config_error_while_wiring_is_one_line_and_78(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    config = write_config(
        tmp_path / "buzon.toml", tmp_path / "data", f"sqlite:///{tmp_path / 'b.db'}", free_port()
    )
    config.write_text(
        config.read_text() + f'tls_cert = "{bad}"\ntls_key = "{bad}"\n[http]\nenabled = false\n'
    )
    for command in (["run"], ["smtp"]):
        done = subprocess.run(
            [sys.executable, "-m", "daemon", *command, "--config", str(config)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 78, done.stderr
        assert done.stderr.strip().count("\n") == 0
        assert "smtp.tls_cert" in done.stderr


def test_a_section_variable_that_is_not_json_is_one_line_and_78(tmp_path: Path) -> None:
    """BUZON_SMTP holds the whole [smtp] section as JSON: a typo there is a config error
    like any other, not a traceback."""
    done = subprocess.run(
        [sys.executable, "-m", "daemon", "config", "check"],
        cwd=tmp_path,
        env={**_env(), "BUZON_SMTP": "{listen: 127.0.0.1:2525"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 78, done.stderr
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert 'error parsing value for field "smtp"' in done.stderr


def test_a_busy_http_port_is_a_config_error(tmp_path: Path) -> None:
    with socket_bound() as port:
        config = write_config(
            tmp_path / "buzon.toml", tmp_path / "d", f"sqlite:///{tmp_path / 'b.db'}", free_port()
        )
        done = subprocess.run(
            [sys.executable, "-m", "daemon", "run", "--config", str(config)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env={**_env(), "BUZON_HTTP__LISTEN": f"127.0.0.1:{port}"},
        )
    assert done.returncode == 78, done.stderr
    assert "each process needs its own port" in done.stderr


@contextmanager
def socket_bound() -> Iterator[int]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock.getsockname()[1]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("BUZON_")}


# --- buzon doctor ----------------------------------------------------------------------------


def _doctor(config: Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["doctor", "--config", str(config)])
    return result.exit_code, result.output


def _imap_config(server: Dovecot, password: str) -> str:
    return (
        f'[[imap.mailboxes]]\nname = "soporte"\nhost = "{server.host}"\nport = {server.port}\n'
        f'security = "none"\nuser = "{server.user}"\npassword = "{password}"\n'
    )


@pytest.mark.dovecot
def test_doctor_is_ok_on_a_healthy_config(tmp_path: Path, dovecot: Dovecot) -> None:
    config = write_config(
        tmp_path / "buzon.toml", tmp_path / "data", f"sqlite:///{tmp_path / 'b.db'}", free_port()
    )
    config.write_text(config.read_text() + _imap_config(dovecot, dovecot.password))
    CliRunner().invoke(main, ["db", "upgrade", "--config", str(config)])
    code, output = _doctor(config)
    assert code == 0, output
    lines = output.strip().splitlines()
    assert all(": ok" in line for line in lines), output
    assert {line.split(":")[0] for line in lines} >= {
        "config",
        "data_dir",
        "database",
        "imap soporte",
        "outbound maildir",
        "queues",
    }
    assert "last successful poll never" in output


@pytest.mark.dovecot
def test_doctor_fails_on_a_dead_relay_and_a_wrong_password(
    tmp_path: Path, dovecot: Dovecot
) -> None:
    relay = f"127.0.0.1:{free_port()}"  # nothing listens there
    config = write_config(
        tmp_path / "buzon.toml", tmp_path / "data", f"sqlite:///{tmp_path / 'b.db'}", free_port()
    )
    text = config.read_text().replace(
        "[ingest]", f'[outbound]\nrelay = "{relay}"\nsecurity = "none"\n[ingest]'
    )
    config.write_text(text + _imap_config(dovecot, "wrong-Secreto-123"))
    code, output = _doctor(config)
    assert code == 1, output
    assert re.search(rf"^relay {relay}: FAIL: ConnectionRefusedError", output, re.M), output
    assert re.search(r"^imap soporte: FAIL: .*LoginError", output, re.M), output
    assert re.search(r"^database: FAIL: .*schema not current", output, re.M), output
    assert "wrong-Secreto-123" not in output


def test_doctor_exits_78_on_a_bad_config(tmp_path: Path) -> None:
    config = tmp_path / "buzon.toml"
    config.write_text("[http]\nlisten = 'nowhere'\n")
    code, output = _doctor(config)
    assert code == 78 and output.startswith("config: FAIL: "), output


# --- the example config ----------------------------------------------------------------------

EXAMPLE = ROOT / "deploy" / "buzon.example.toml"


def _keys(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(section, key) of every leaf setting; a nested model is a [section]."""
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _keys(annotation, f"{prefix}{name}.")
        else:
            yield prefix.rstrip("."), field.alias or name


def test_the_example_config_loads_and_lists_every_key(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in [v for v in os.environ if v.startswith("BUZON_")]:
        monkeypatch.delenv(var)
    assert load_settings(EXAMPLE) == load_settings(None)  # the defaults, nothing else
    text = EXAMPLE.read_text()
    keys = [*_keys(Settings), *_keys(ImapMailbox, "imap.mailboxes."), *_keys(SlaTargetConfig)]
    sections = {section for section, _ in keys if section}
    for section in sections - {"imap.mailboxes"}:
        assert f"\n[{section}]\n" in text, f"no [{section}]"
    assert "#[[imap.mailboxes]]" in text
    missing = [
        f"{section}.{key}".lstrip(".")
        for section, key in keys
        if key != "mailboxes" and not re.search(rf'^#?\s*{key} =|\b{key}" =', text, re.M)
    ]
    assert not missing, f"deploy/buzon.example.toml lacks {missing}"


# --- logs --------------------------------------------------------------------------------------


def test_logs_are_one_line_per_event_and_quiet_aiosmtpd() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure("INFO", json_format=False)
        # aiosmtpd logs every command line (AUTH included) on "mail.log" at INFO.
        assert logging.getLogger("mail.log").getEffectiveLevel() == logging.WARNING
        formatter = root.handlers[0].formatter
        assert formatter is not None
        try:
            raise ValueError("first\nsecond")
        except ValueError:
            record = logging.getLogger("t").makeRecord(
                "t", logging.ERROR, __file__, 1, "boom", (), sys.exc_info()
            )
        assert "\n" not in formatter.format(record)
        json_line = JsonFormatter().format(
            logging.makeLogRecord({"msg": "x", "password": "hunter2", "mailbox": "soporte"})
        )
        assert "hunter2" not in json_line and json.loads(json_line)["mailbox"] == "soporte"
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
