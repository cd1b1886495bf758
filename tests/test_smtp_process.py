"""A real `buzon smtp` process: killed with SIGKILL in the middle of a burst, and stopped
with SIGTERM in the middle of a transaction."""

from __future__ import annotations

import signal
import smtplib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.fixtures.service import sqlite_rows
from tests.helpers import free_port, greeting
from tests.mailbuilder import mail, message_id

ROOT = Path(__file__).resolve().parents[1]
SUPPORT = "soporte@soporte.example"


class Buzon:
    """`python -m daemon smtp` on a temp data dir; its log goes to a file."""

    def __init__(self, tmp_path: Path) -> None:
        self.db = tmp_path / "buzon.db"
        self.config = tmp_path / "buzon.toml"
        self.config.write_text(
            f'data_dir = "{tmp_path / "data"}"\n'
            f'database_url = "sqlite:///{self.db}"\n'
            f'support_addresses = ["{SUPPORT}"]\n'
            'secret_key = "test-secret-0123456789"\n'
            "[ingest]\npoll_interval = 0.2\nstale_claim_seconds = 10\n"
            "[smtp]\nshutdown_grace = 10\n"
            "[http]\nenabled = false\n"
        )
        self.log = tmp_path / "buzon.log"
        self.port = 0

    @contextmanager
    def running(self) -> Iterator[subprocess.Popen[bytes]]:
        self.port = free_port()
        cmd = [sys.executable, "-m", "daemon", "smtp", "--config", str(self.config)]
        cmd += ["--listen", f"127.0.0.1:{self.port}"]
        with self.log.open("ab") as log:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=log)
        try:
            self._wait_greeting(proc)
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)

    def _wait_greeting(self, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"buzon smtp exited {proc.returncode}:\n{self.log.read_text()}")
            if greeting(self.port).startswith(b"220"):
                return
            time.sleep(0.05)
        pytest.fail(f"buzon smtp did not greet:\n{self.log.read_text()}")

    def query(self, sql: str) -> list[tuple[object, ...]]:
        return sqlite_rows(self.db, sql)

    # The restart starts its ingest worker processes first (ingest.processes; seconds of
    # imports each on a busy machine) before the backlog of up to 750 mails.
    def wait_processed(self, timeout: float = 150.0) -> None:
        deadline = time.monotonic() + timeout
        waiting = "SELECT count(*) FROM raw_messages WHERE state IN ('pending', 'processing')"
        while self.query(waiting)[0][0]:
            assert time.monotonic() < deadline, f"still unprocessed:\n{self.log.read_text()}"
            time.sleep(0.1)


class Burst:
    """`total` messages over `connections` smtplib clients; counts the 250s it got."""

    def __init__(self, port: int, total: int, connections: int) -> None:
        self.port = port
        self.mails = [
            mail(f"Cliente {n} <cliente{n}@clinica.example>", f"Consulta {n}", f"Texto {n}")
            for n in range(total)
        ]
        self.acked: list[str] = []
        self.lock = threading.Condition()
        self.threads = [
            threading.Thread(target=self._send, args=(self.mails[i::connections],), daemon=True)
            for i in range(connections)
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def wait_acked(self, count: int, timeout: float = 30.0) -> None:
        with self.lock:
            assert self.lock.wait_for(lambda: len(self.acked) >= count, timeout)

    def join(self) -> None:
        for thread in self.threads:
            thread.join(30)

    def _send(self, mails: list[bytes]) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", self.port, timeout=10) as client:
                for raw in mails:
                    client.sendmail(f"x@{self.port}.example", [SUPPORT], raw)
                    with self.lock:  # sendmail returned: the server answered 250
                        self.acked.append(message_id(raw).strip("<>"))
                        self.lock.notify_all()
        except (smtplib.SMTPException, OSError):
            return  # the server died under us: what was not acknowledged is the sender's


@pytest.mark.slow
def test_sigkill_during_a_burst_loses_and_doubles_nothing_acknowledged(tmp_path: Path) -> None:
    buzon = Buzon(tmp_path)
    with buzon.running() as proc:
        burst = Burst(buzon.port, total=1000, connections=8)
        burst.start()
        burst.wait_acked(250)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        burst.join()
    acked = set(burst.acked)
    assert 250 <= len(acked) < 1000

    with buzon.running() as proc:  # the restart processes what the crash left pending
        buzon.wait_processed()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0

    copies = dict(buzon.query("SELECT message_id, count(*) FROM raw_messages GROUP BY 1"))
    assert {mid: copies.get(mid) for mid in acked} == dict.fromkeys(acked, 1)
    states = dict(buzon.query("SELECT state, count(*) FROM raw_messages GROUP BY 1"))
    assert set(states) == {"processed"}, states
    subjects = buzon.query("SELECT count(DISTINCT subject) FROM tickets")[0][0]
    assert subjects == states["processed"]  # one ticket per stored mail


def test_sigterm_finishes_the_transaction_in_progress_and_exits_0(tmp_path: Path) -> None:
    buzon = Buzon(tmp_path)
    raw = mail("Ana <ana@clinica.example>", "En vuelo", "Llega durante el apagado").replace(
        b"\n", b"\r\n"
    )
    with buzon.running() as proc:
        idle = smtplib.SMTP("127.0.0.1", buzon.port, timeout=10)
        idle.ehlo()
        busy = smtplib.SMTP("127.0.0.1", buzon.port, timeout=10)
        busy.ehlo()
        busy.mail("ana@clinica.example")
        busy.rcpt(SUPPORT)
        busy.putcmd("data")
        assert busy.getreply()[0] == 354
        busy.send(raw[:100])  # half a message on the wire

        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while not greeting(buzon.port).startswith(b"421"):  # new connections: 421
            assert time.monotonic() < deadline, buzon.log.read_text()
        assert idle.getreply()[0] == 421  # the idle session is told and closed

        busy.send(raw[100:] + b".\r\n")
        code, message = busy.getreply()
        assert (code, message[:5]) == (250, b"2.0.0")  # the transaction in flight completes
        assert busy.getreply()[0] == 421  # ... and then the session closes
        assert proc.wait(30) == 0
        idle.close()
        busy.close()
    assert buzon.query("SELECT state FROM raw_messages") == [("processed",)]
    log = buzon.log.read_text()
    assert "1 transaction(s) in progress may finish" in log and "stopped cleanly" in log
    assert log.count("accepted raw=") == 1
