"""The `buzon` command as ops and an MTA use it: real processes, real exit codes."""

from __future__ import annotations

import json
import mailbox
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.mailbuilder import mail

BUZON = [sys.executable, "-m", "daemon"]


def run(
    args: list[str], cwd: Path, stdin: bytes | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("BUZON_")}
    environment.update(env)
    return subprocess.run(
        [*BUZON, *args],
        cwd=cwd,
        input=stdin.decode() if stdin else None,
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


def test_pipe_ingest_then_list_shows_the_ticket_on_the_embedded_default(workdir: Path) -> None:
    raw = mail(
        "Ana <ana@clinica.example>", "No carga la agenda", "Hola, no carga.", to="soporte@localhost"
    )
    result = run(["ingest"], workdir, stdin=raw)
    assert result.returncode == 0, result.stderr
    assert "processed ticket #1" in result.stdout
    assert (workdir / "buzon-data" / "buzon.db").exists()
    listed = run(["tickets", "list", "--json"], workdir)
    tickets = json.loads(listed.stdout)
    assert [(t["number"], t["subject"], t["status"]) for t in tickets] == [
        (1, "No carga la agenda", "new")
    ]
    shown = run(["tickets", "show", "1"], workdir)
    assert "ana@clinica.example" in shown.stdout and "No carga la agenda" in shown.stdout
    again = run(["ingest"], workdir, stdin=raw)
    assert "ignored" in again.stdout and "duplicate" in again.stdout


def test_unstorable_mail_exits_75_so_the_mta_retries(workdir: Path) -> None:
    (workdir / "blocked").write_text("a file where the database directory should be")
    result = run(
        ["ingest"],
        workdir,
        stdin=b"Subject: x\r\n\r\nhola\r\n",
        BUZON_DATABASE_URL=f"sqlite:///{workdir / 'blocked' / 'buzon.db'}",
    )
    assert result.returncode == 75
    assert result.stderr.count("\n") == 1 and "buzon:" in result.stderr


def test_bad_config_stops_with_one_line_naming_the_key(workdir: Path) -> None:
    cfg = workdir / "buzon.toml"
    cfg.write_text('[smtp]\nlisten = "localhost:99999"\n')
    result = run(["tickets", "list", "--config", str(cfg)], workdir)
    assert result.returncode == 78
    assert result.stderr.strip().count("\n") == 0
    assert "smtp.listen" in result.stderr and "HOST:PORT" in result.stderr
    env_bad = run(["config", "check"], workdir, BUZON_SUPPORT_ADDRESSES='["not-an-address"]')
    assert env_bad.returncode == 78 and "support_addresses" in env_bad.stderr
    unknown = workdir / "typo.toml"
    unknown.write_text("suport_addresses = ['a@b.c']\n")
    typo = run(["config", "check", str(unknown)], workdir)
    assert typo.returncode == 78 and "suport_addresses: unknown setting" in typo.stderr
    assert run(["config", "check", str(workdir / "missing.toml")], workdir).returncode == 78


def test_backfill_maildir_and_mbox_report_a_summary(workdir: Path) -> None:
    box = mailbox.Maildir(workdir / "md")
    for i in range(3):
        box.add(mail(f"c{i}@clinica.example", f"Consulta {i}", "hola"))
    box.add(
        mail(
            "c9@clinica.example",
            "Out of office",
            "fuera",
            headers={"Auto-Submitted": "auto-replied"},
        )
    )
    result = run(["ingest", "--maildir", str(workdir / "md")], workdir)
    assert result.returncode == 0, result.stderr
    assert "4 messages: 1 ignored, 3 processed" in result.stdout
    mbox = mailbox.mbox(workdir / "in.mbox")
    mbox.add(mail("d@clinica.example", "Desde mbox", "hola"))
    mbox.flush()
    result = run(["ingest", "--mbox", str(workdir / "in.mbox")], workdir)
    assert "1 messages: 1 processed" in result.stdout
    inbound = json.loads(run(["inbound", "list", "--json"], workdir).stdout)
    assert len(inbound) == 5 and {r["source"] for r in inbound} == {"backfill"}


def test_failed_messages_are_listed_and_reprocessed(workdir: Path) -> None:
    data = workdir / "buzon-data"
    data.mkdir()
    (data / "attachments").write_text("blocks attachment storage")
    raw = mail(
        "a@clinica.example",
        "Con adjunto",
        "ver",
        attachments=[("a.pdf", "application/pdf", b"%PDF-1.4")],
    )
    assert "failed" in run(["ingest"], workdir, stdin=raw).stdout
    failed = json.loads(run(["inbound", "list", "--state", "failed", "--json"], workdir).stdout)
    assert len(failed) == 1 and failed[0]["reason"]
    (data / "attachments").unlink()
    result = run(["inbound", "reprocess", "--failed"], workdir)
    assert "1 reprocessed: 1 processed" in result.stdout
