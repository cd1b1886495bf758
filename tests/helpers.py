"""Plain helpers shared by the test modules (fixtures live in tests/fixtures/, registered in
conftest.py). No test module imports from another test module or from conftest: what two
of them need lives here.

- servers: `missing_server` (skip loudly, fail in CI), `free_port`, `greeting`
- apps: `make_app` (an App on a temp data dir), `relay_app` (one that relays to a sink)
- the real code paths: `ingest`, `new_ticket`, `act` (an agent's command), `deliver`,
  `buzon` (the CLI as a process)
- looking at the result: `count`, `events`, `parsed`, `body`
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from daemon.config import load_settings
from daemon.wiring import App
from notifier.delivery import deliver_due
from tests.mailbuilder import mail
from tickets.changes import Change
from tickets.inbox import accept
from tickets.ingest import Outcome
from tickets.models import Event, OutboxMessage, Ticket

if TYPE_CHECKING:  # a runtime import would load the plugin before pytest can rewrite it
    from tests.fixtures.smtp_sink import Received, SmtpSink

ANA = "Ana Pérez <ana@clinica.example>"
LUIS = "Luis Gómez <luis@clinica.example>"
MARTA = "Marta Ruiz <marta@clinica.example>"
AGENT = "maria"

IN_CI = os.environ.get("CI", "").lower() == "true"

# --- servers ----------------------------------------------------------------------------------

missing: set[str] = set()  # reported by conftest's terminal summary


def missing_server(name: str, why: str) -> None:
    """Skip loudly, or fail in CI, when a server the test needs is absent."""
    missing.add(f"{name}: {why}")
    if IN_CI:
        pytest.fail(f"{name} is required in CI but unavailable: {why}", pytrace=False)
    pytest.skip(f"SERVER MISSING - {name}: {why}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def greeting(port: int) -> bytes:
    """The first line a new connection gets ('' when nobody listens)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            return sock.makefile("rb").readline()
    except OSError:
        return b""


def wait_for_greeting(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Until the process on `port` greets with 220; fails if it exits or takes too long."""
    deadline = time.monotonic() + timeout
    while not greeting(port).startswith(b"220"):
        assert proc.poll() is None, f"exited with {proc.returncode} before greeting"
        assert time.monotonic() < deadline, f"no greeting within {timeout:g} s"
        time.sleep(0.05)


def vm_hwm(pid: int) -> int:
    """The process's peak resident set (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def block_attachment_store(app: App) -> Path:
    """A file where the attachment store's directory should be: storing any attachment
    fails (a mail's own failure). Unlink the returned path to mend it."""
    blocker = app.settings.attachments_dir
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("not a directory")
    return blocker


# --- apps -------------------------------------------------------------------------------------


def make_app(tmp_path: Path, db_url: str, **overrides: object) -> App:
    # The suite's apps have an agent configured; agents' notifications are off unless a
    # test asks for them (tests/test_agent_mail.py), so that the tests of customers' mail
    # count customers' mail.
    overrides.setdefault("agent_mail", {"notify": False})
    # `runners("run")` binds the API/console port: never the shared default in tests.
    overrides.setdefault("web", {"listen": f"127.0.0.1:{free_port()}"})
    # The in-process worker (runners() would otherwise start a worker process per core).
    ingest = overrides.setdefault("ingest", {})
    if isinstance(ingest, dict):
        ingest.setdefault("processes", 1)
    settings = load_settings(
        None,
        data_dir=tmp_path / "data",
        database_url=db_url,
        secret_key="test-secret-0123456789",
        **overrides,
    )
    app = App(settings)
    app.prepare()
    return app


def relay_app(tmp_path: Path, db_url: str, sink: SmtpSink, **overrides: Any) -> App:
    outbound = {"relay": sink.relay, "security": "none", **overrides.pop("outbound", {})}
    settings: dict[str, Any] = {
        "agents": ["agente@soporte.example"],
        "support_addresses": ["soporte@soporte.example"],
        "aliases": ["ayuda@soporte.example"],
        **overrides,
    }
    return make_app(tmp_path, db_url, outbound=outbound, **settings)


# --- the real code paths ----------------------------------------------------------------------


def ingest(app: App, raw: bytes) -> Outcome:
    """A piped mail, processed with the app's after-change hook (SLA clocks, notifications)."""
    return app.desk.ingest(accept(app.sessions, raw, "pipe"))


def new_ticket(app: App, **kwargs: Any) -> tuple[int, bytes]:
    raw = mail(
        ANA,
        kwargs.pop("subject", "No puedo agendar citas"),
        kwargs.pop("text", "Hola, el sistema no me deja agendar."),
        **kwargs,
    )
    outcome = ingest(app, raw)
    assert outcome.state == "processed" and outcome.ticket_id is not None
    return outcome.ticket_id, raw


def act(app: App, number: int, action: Callable[[Session, Ticket], list[Change]]) -> list[Change]:
    """What an agent's command does: the action, SLA and mail in one transaction."""
    return app.desk.act(number, action).changes


def deliver(app: App, now: datetime | None = None) -> Counter[str]:
    return deliver_due(app.sessions, app.transport(), now, app.delivery_policy)


def outbox_bytes(app: App, row: OutboxMessage) -> bytes:
    """The bytes an outbox row sends: stored, or rendered from its plan as delivery does."""
    if row.raw is not None:
        return row.raw
    assert row.plan is not None
    return app.delivery_policy.materializer.raw(row.plan, row.message_id, row.recipients)


def python_child(code: str, args: list[str], workdir: Path) -> subprocess.CompletedProcess[str]:
    """`python -c CODE ARGS` with the checkout importable and `workdir`'s data dir as
    `buzon` has it: for a test that looks inside the process (its modules, its memory)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUZON_")}
    env.update(
        BUZON_DATA_DIR=str(workdir / "data"),
        BUZON_SECRET_KEY="test-secret-0123456789",
        BUZON_SUPPORT_ADDRESSES='["soporte@soporte.example"]',
        PYTHONPATH=str(Path(__file__).resolve().parents[1]),
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def buzon(
    args: list[str], workdir: Path, stdin: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """`python -m daemon ARGS` on `workdir`'s data dir, as agent maria; a variable
    given as "" in `env` is unset (e.g. BUZON_SECRET_KEY="": the generated key)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("BUZON_")}
    environment.update(
        {
            "BUZON_DATA_DIR": str(workdir / "data"),
            "BUZON_SECRET_KEY": "test-secret-0123456789",
            "BUZON_SUPPORT_ADDRESSES": '["soporte@soporte.example"]',
            "BUZON_AGENT": "maria",
            **env,
        }
    )
    environment = {k: v for k, v in environment.items() if v != ""}
    return subprocess.run(
        [sys.executable, "-m", "daemon", *args],
        cwd=workdir,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
    )


# --- looking at the result --------------------------------------------------------------------


def count(app: App, model: Any, *where: Any) -> int:
    with app.sessions() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where)) or 0


def events(app: App, number: int, kind: str) -> list[Event]:
    with app.sessions() as s:
        return list(s.scalars(select(Event).where(Event.ticket_id == number, Event.kind == kind)))


def parsed(item: Received) -> EmailMessage:
    msg = message_from_bytes(item.data, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def body(msg: EmailMessage) -> str:
    part = msg.get_body(("plain",))
    assert part is not None
    text: str = part.get_content()  # type: ignore[attr-defined]
    return text.replace("\r\n", "\n")
