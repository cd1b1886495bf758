"""Logging in: XOAUTH2 validated by Dovecot itself (its oauth2 passdb asks our fixture's
token-introspection endpoint), the token command's cache, and `buzon imap` end to end."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from daemon.intake.imap_auth import OAuth2Login, TokenError
from daemon.intake.imap_poller import mailbox_status
from daemon.wiring import App
from tests.fixtures.dovecot import Dovecot, mailbox_config, running, wait_until
from tests.helpers import make_app
from tests.mailbuilder import mail
from tickets.models import Ticket

TOKEN_SCRIPT = """\
import json, pathlib, sys
counter = pathlib.Path(sys.argv[1])
n = int(counter.read_text()) + 1 if counter.exists() else 1
counter.write_text(str(n))
print(json.dumps({"access_token": f"tok-{n}", "expires_in": int(sys.argv[2])}))
"""


@pytest.fixture
def token_command(tmp_path: Path) -> tuple[str, Path]:
    """A stand-in for an IdP helper: prints tok-1, tok-2, ... and counts its runs."""
    script = tmp_path / "token.py"
    script.write_text(TOKEN_SCRIPT)
    counter = tmp_path / "runs"
    return f"{sys.executable} {script} {counter} 3600", counter


def tickets(app: App) -> int:
    with app.sessions() as session:
        return session.scalar(select(func.count()).select_from(Ticket)) or 0


def oauth_app(tmp_path: Path, server: Dovecot, command: str) -> App:
    box = mailbox_config(
        server, user=server.oauth_user, password=None, oauth2_token_command=command
    )
    return make_app(
        tmp_path,
        f"sqlite:///{tmp_path / 'buzon.db'}",
        support_addresses=["soporte@soporte.example"],
        imap={"reconnect_min_seconds": 0.05, "reconnect_max_seconds": 0.5, "mailboxes": [box]},
    )


@pytest.mark.dovecot
def test_xoauth2_token_from_a_command_is_stored_reused_and_refreshed_when_refused(
    tmp_path: Path,
    dovecot: Dovecot,
    token_command: tuple[str, Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    command, runs = token_command
    dovecot.oauth_tokens.update({"tok-1", "admin"})
    app = oauth_app(tmp_path, dovecot, command)
    box = app.settings.imap.mailboxes[0]
    dovecot.append_many([mail("a@clinica.example", "Uno", "hola")], oauth_token="admin")
    with running(app.imap_poller(box)):
        wait_until(lambda: tickets(app) == 1, 10, "the ticket via XOAUTH2")
    cache = app.settings.data_dir / "imap-tokens" / "soporte.json"
    assert json.loads(cache.read_text())["access_token"] == "tok-1"
    assert cache.stat().st_mode & 0o777 == 0o600
    (status,) = mailbox_status(app.sessions, [box])
    assert status["token_refreshed_at"] is not None and status["token_age_seconds"] >= 0

    # A restart reuses the stored token: the command does not run again.
    dovecot.append_many([mail("b@clinica.example", "Dos", "hola")], oauth_token="admin")
    with running(app.imap_poller(box)):
        wait_until(lambda: tickets(app) == 2, 10, "the second ticket")
    assert runs.read_text() == "1"

    # The IdP revokes tok-1: the refused login drops it and the next one fetches tok-2.
    dovecot.oauth_tokens.discard("tok-1")
    dovecot.oauth_tokens.add("tok-2")
    dovecot.append_many([mail("c@clinica.example", "Tres", "hola")], oauth_token="admin")
    with running(app.imap_poller(box)):
        wait_until(lambda: tickets(app) == 3, 15, "the third ticket with a fresh token")
    assert runs.read_text() == "2"
    assert json.loads(cache.read_text())["access_token"] == "tok-2"
    assert "tok-" not in caplog.text


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2025, 3, 3, 10, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_a_cached_token_is_reused_until_shortly_before_it_expires(tmp_path: Path) -> None:
    script = tmp_path / "token.py"
    script.write_text(TOKEN_SCRIPT)
    runs = tmp_path / "runs"
    clock = Clock()
    cache = tmp_path / "data" / "imap-tokens" / "box.json"
    login = OAuth2Login(
        "u@x.example",
        token_command=f"{sys.executable} {script} {runs} 120",
        cache_path=cache,
        clock=clock,
    )
    assert login.token() == "tok-1"
    clock.now += timedelta(seconds=50)
    assert login.token() == "tok-1"  # 70 s left: reused
    clock.now += timedelta(seconds=20)
    assert login.token() == "tok-2"  # 50 s left, inside the safety margin: refreshed
    assert login.refreshed_at == clock.now
    assert [p.name for p in cache.parent.iterdir()] == ["box.json"]  # no temp file left
    # A new process (fresh object) reads the stored token instead of running the command.
    again = OAuth2Login("u@x.example", token_command=login.token_command, cache_path=cache)
    again.clock = clock
    assert again.token() == "tok-2" and runs.read_text() == "2"


def test_a_failing_token_command_does_not_leak_its_output(tmp_path: Path) -> None:
    login = OAuth2Login("u", token_command="sh -c 'echo s3cr3t; echo s3cr3t >&2; exit 3'")
    with pytest.raises(TokenError) as caught:
        login.token()
    assert "status 3" in str(caught.value) and "s3cr3t" not in str(caught.value)


def test_a_plain_token_lives_for_the_configured_lifetime(tmp_path: Path) -> None:
    clock = Clock()
    login = OAuth2Login("u", token_command="echo plain-token", default_lifetime=600, clock=clock)
    assert login.token() == "plain-token"
    assert login._token is not None
    assert login._token.expires_at == clock.now + timedelta(seconds=600)


# --- the command ----------------------------------------------------------------------------


@pytest.mark.dovecot
def test_buzon_imap_runs_until_sigterm(tmp_path: Path, dovecot: Dovecot) -> None:
    config = tmp_path / "buzon.toml"
    secret = tmp_path / "imap-password"
    secret.write_text(dovecot.password + "\n")
    config.write_text(
        f"""
data_dir = "{tmp_path / "data"}"
support_addresses = ["soporte@soporte.example"]

[http]
enabled = false

[imap]
reconnect_min_seconds = 0.1

[[imap.mailboxes]]
name = "soporte"
host = "{dovecot.host}"
port = {dovecot.port}
security = "none"
user = "{dovecot.user}"
password_file = "{secret}"
"""
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUZON_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "daemon", "imap", "--config", str(config)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        dovecot.append(mail("a@clinica.example", "Desde el comando", "hola"))
        app = make_app(tmp_path, f"sqlite:///{tmp_path / 'data' / 'buzon.db'}")
        wait_until(lambda: tickets(app) == 1, 20, "the ticket from `buzon imap`")
        app.engine.dispose()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 0, stderr
    assert "component" in stderr and dovecot.password not in stderr


def test_buzon_imap_without_mailboxes_is_a_config_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUZON_")}
    env["BUZON_DATA_DIR"] = str(tmp_path / "data")
    done = subprocess.run(
        [sys.executable, "-m", "daemon", "imap"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 78 and "no IMAP mailbox configured" in done.stderr
