"""The memory of `buzon smtp`'s listener for a 25 MB mail: received, stored and answered
holding the mail about once (aiosmtpd's line list and join held it three times over).

A real `buzon smtp` process with its ingest worker processes; the listener's VmHWM after
a small mail went the whole way (every module imported, every path warmed), then after
the big one was processed into a ticket.
"""

from __future__ import annotations

import smtplib
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import free_port, vm_hwm, wait_for_greeting
from tests.mailbuilder import big_mail, mail

ROOT = Path(__file__).resolve().parents[1]
SUPPORT = "soporte@soporte.example"


def send_and_wait(port: int, raw: bytes, db: Path, done: int) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=300) as client:
        client.sendmail("lucia.sanchez@example.es", [SUPPORT], raw)
    deadline = time.monotonic() + 300
    query = "SELECT count(*) FROM raw_messages WHERE state = 'processed'"
    while True:
        with sqlite3.connect(db) as conn:
            if conn.execute(query).fetchone()[0] >= done:
                return
        assert time.monotonic() < deadline, "not processed in time"
        time.sleep(0.2)


def test_the_listener_holds_a_25_mb_mail_under_4_times_its_size(tmp_path: Path) -> None:
    port, db = free_port(), tmp_path / "buzon.db"
    config = tmp_path / "buzon.toml"
    config.write_text(
        f'data_dir = "{tmp_path}/data"\ndatabase_url = "sqlite:///{db}"\n'
        f'support_addresses = ["{SUPPORT}"]\nsecret_key = "test-secret-0123456789"\n'
        "[ingest]\nprocesses = 2\n[http]\nenabled = false\n"
        f'[smtp]\nlisten = "127.0.0.1:{port}"\nmax_message_size = {40 * 2**20}\n'
    )
    raw = big_mail()
    with (tmp_path / "buzon.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "daemon", "smtp", "--config", str(config)],
            cwd=ROOT,
            stdout=log,
            stderr=log,
        )
    try:
        wait_for_greeting(port, proc, 60)
        send_and_wait(port, mail("Ana <ana@cliente.example>", "Consulta", "Hola."), db, 1)
        idle = vm_hwm(proc.pid)
        send_and_wait(port, raw, db, 2)
        peak = vm_hwm(proc.pid)
    finally:
        proc.terminate()
        proc.wait(60)
    # Measured: 3.1x (the growing buffer, and SQLite's own copy as it binds and writes it);
    # 4.8x when aiosmtpd collected the lines.
    above = peak - idle
    assert above < 4 * len(raw), f"{above / 2**20:.0f} MB above idle for {len(raw) / 2**20:.0f} MB"
