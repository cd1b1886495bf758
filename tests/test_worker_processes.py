"""`buzon run` with ingest.processes = 2: mail taken in by the main process and made into
tickets by two worker processes, exactly once, through a worker's SIGKILL and the
parent's SIGTERM; and the setting's validation."""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

from daemon.config import ConfigError, load_settings
from tests.fixtures.dovecot import Dovecot
from tests.fixtures.service import SUPPORT, http_get, samples, sqlite_rows, wait_for, write_config
from tests.helpers import free_port, greeting
from tests.mailbuilder import mail

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 60.0  # three interpreters start on a shared 2-core machine


class Run:
    """`python -m daemon run` with two ingest worker processes; its log goes to a file."""

    def __init__(self, tmp_path: Path) -> None:
        self.db = tmp_path / "buzon.db"
        self.smtp_port, self.http_port = free_port(), free_port()
        extra = f'[http]\nlisten = "127.0.0.1:{self.http_port}"\n'
        db_url = f"sqlite:///{self.db}"
        self.config = write_config(
            tmp_path / "buzon.toml", tmp_path / "data", db_url, self.smtp_port, extra
        )
        # [ingest] is written by write_config: the key of this test comes from the env.
        # Claims stay valid for the default 300 s: a killed worker's rows must come back
        # through its successor's start, not through their age.
        self.env = {**os.environ, "BUZON_INGEST__PROCESSES": "2", "BUZON_WEB__ENABLED": "false"}
        self.log = tmp_path / "buzon.log"

    @contextmanager
    def running(self, own_group: bool = False) -> Iterator[subprocess.Popen[bytes]]:
        """`own_group`: in a process group of its own, as systemd's control group."""
        cmd = [sys.executable, "-m", "daemon", "run", "--config", str(self.config)]
        with self.log.open("ab") as log:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=log, stderr=log,
                                    start_new_session=own_group)  # fmt: skip
        try:
            wait_for(lambda: self._up(proc), START_TIMEOUT, "the listener and two workers")
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)

    def _up(self, proc: subprocess.Popen[bytes]) -> bool:
        assert proc.poll() is None, f"buzon run exited {proc.returncode}:\n{self.text()}"
        ready = self.text().count("ingest worker process ready")
        return ready >= 2 and greeting(self.smtp_port).startswith(b"220")

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def query(self, sql: str) -> list[tuple[object, ...]]:
        return sqlite_rows(self.db, sql)

    def unprocessed(self) -> int:
        sql = "SELECT count(*) FROM raw_messages WHERE state IN ('pending', 'processing')"
        return int(self.query(sql)[0][0])  # type: ignore[call-overload]

    def assert_each_mail_once(self, total: int) -> None:
        (raw, tickets, articles, distinct), *_ = self.query(
            "SELECT (SELECT count(*) FROM raw_messages WHERE state = 'processed'),"
            " (SELECT count(*) FROM tickets),"
            " (SELECT count(*) FROM articles WHERE raw_message_id IS NOT NULL),"
            " (SELECT count(DISTINCT raw_message_id) FROM articles)"
        )
        assert (raw, tickets, articles, distinct) == (total, total, total, total), self.text()


def send(port: int, first: int, total: int, connections: int = 4) -> None:
    """`total` new-ticket mails over `connections` concurrent SMTP sessions."""
    numbers = list(range(first, first + total))

    def session(part: list[int]) -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            for n in part:
                raw = mail(f"Cliente {n} <cliente{n}@clinica.example>", f"Consulta {n}", "Hola")
                client.sendmail(f"cliente{n}@clinica.example", [SUPPORT], raw)

    with ThreadPoolExecutor(connections) as pool:
        list(pool.map(session, [numbers[i::connections] for i in range(connections)]))


def children(pid: int) -> list[int]:
    """The worker processes of `pid`: the children of its fork server."""
    return [w for server in fork_servers(pid) for w in _kids(server)]


def fork_servers(pid: int) -> list[int]:
    """The fork server among the children of `pid` (its resource tracker left out)."""
    return [p for p in _kids(pid) if "forkserver" in _cmdline(p)]


def _kids(pid: int) -> list[int]:
    found = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/children") as listing:
            found += [int(p) for p in listing.read().split()]
    return found


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def gone(pid: int) -> bool:
    """Exited and reaped (a zombie would still be there)."""
    return not os.path.exists(f"/proc/{pid}")


def dead(pid: int) -> bool:
    """Exited: gone, or a zombie left to whoever adopted it (the parent was killed)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.mark.slow
def test_two_worker_processes_make_each_mail_one_ticket(tmp_path: Path) -> None:
    run = Run(tmp_path)
    with run.running() as proc:
        workers = children(proc.pid)
        assert len(workers) == 2
        send(run.smtp_port, 0, 40)
        wait_for(lambda: run.unprocessed() == 0, 90, "every mail processed")
        run.assert_each_mail_once(40)
        # The workers report each outcome to the parent, whose /metrics counts it.
        key = ("buzon_messages_processed_total", (("state", "processed"),))
        deadline = time.monotonic() + 30
        while (counted := samples(run.http_port).get(key)) != 40 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert counted == 40, run.text()[-3000:]
        status, body = http_get(run.http_port, "/readyz")
        assert status == 200 and '"workers": "ok: 2 worker process(es)"' in body


@pytest.mark.slow
def test_a_killed_worker_is_restarted_and_nothing_is_lost_or_doubled(tmp_path: Path) -> None:
    run = Run(tmp_path)
    with run.running() as proc:
        victim, survivor = children(proc.pid)
        send(run.smtp_port, 0, 60)
        # Mid-batch: rows claimed and not yet finished.
        claimed = "SELECT count(*) FROM raw_messages WHERE state = 'processing'"
        wait_for(lambda: run.query(claimed)[0][0], 60, "a claimed batch")
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: "worker=" in run.text() and "restarted pid=" in run.text(), 30,
                 "the restart")  # fmt: skip
        wait_for(lambda: run.unprocessed() == 0, 120, "every mail processed")
        run.assert_each_mail_once(60)
        replacement = set(children(proc.pid)) - {survivor}
        assert len(replacement) == 1 and victim not in replacement
        assert f"pid={victim} died exit=-9" in run.text()


@pytest.mark.slow
def test_sigterm_stops_the_parent_and_its_workers(tmp_path: Path) -> None:
    run = Run(tmp_path)
    with run.running() as proc:
        workers = children(proc.pid)
        send(run.smtp_port, 0, 10)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(40) == 0, run.text()
    wait_for(lambda: all(gone(p) for p in workers), 5, "the workers gone")
    assert "ingest worker processes stopped exits=0,0" in run.text(), run.text()[-3000:]
    # What was accepted before the stop was drained by the workers.
    assert run.unprocessed() == 0
    run.assert_each_mail_once(10)


@pytest.mark.slow
def test_sigterm_to_the_whole_group_drains_as_one_to_the_parent(tmp_path: Path) -> None:
    """systemd signals every process of the service: the fork server outlives it, so
    the parent still sees its workers drain and exit 0."""
    run = Run(tmp_path)
    with run.running(own_group=True) as proc:
        workers = children(proc.pid)
        send(run.smtp_port, 0, 10)
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(40) == 0, run.text()
    wait_for(lambda: all(dead(p) for p in workers), 5, "the workers gone")
    assert "ingest worker processes stopped exits=0,0" in run.text(), run.text()[-3000:]
    assert run.unprocessed() == 0
    run.assert_each_mail_once(10)


@pytest.mark.slow
def test_sigkill_of_the_parent_leaves_no_worker_or_fork_server(tmp_path: Path) -> None:
    run = Run(tmp_path)
    with run.running() as proc:
        left = [*children(proc.pid), *fork_servers(proc.pid)]
        assert len(left) == 3
        send(run.smtp_port, 0, 10)
        proc.kill()
        proc.wait(10)
    wait_for(lambda: all(dead(p) for p in left), 10, "the workers and fork server gone")


@pytest.mark.slow
@pytest.mark.dovecot
def test_buzon_imap_hands_its_batches_to_the_worker_processes(
    tmp_path: Path, dovecot: Dovecot
) -> None:
    """The poller stores and fetches on; the workers process; each message is moved on
    the server once its row is final, a failing one to the error folder."""
    mails = [mail(f"Cliente {n} <cliente{n}@clinica.example>", f"Consulta {n}", "Hola")
             for n in range(60)]  # fmt: skip
    mails.insert(30, mail("Otro <otro@clinica.example>", "Adjunto", "Hola",
                          attachments=[("a.pdf", "application/pdf", b"%PDF")]))  # fmt: skip
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "attachments").write_text("not a directory")  # its store fails
    db = tmp_path / "buzon.db"
    box = (
        f'[http]\nlisten = "127.0.0.1:{free_port()}"\n[[imap.mailboxes]]\nname = "soporte"\n'
        f'host = "{dovecot.host}"\nport = {dovecot.port}\nsecurity = "none"\n'
        f'user = "{dovecot.user}"\npassword = "{dovecot.password}"\nbatch_size = 10\n'
        'after_ingest = "move"\nprocessed_folder = "Processed"\n'
    )
    config = write_config(
        tmp_path / "buzon.toml", tmp_path / "data", f"sqlite:///{db}", free_port(), box
    )
    env = {**os.environ, "BUZON_INGEST__PROCESSES": "2"}
    log = tmp_path / "buzon.log"
    cmd = [sys.executable, "-m", "daemon", "imap", "--config", str(config)]
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=out)

    def emptied() -> bool:
        assert proc.poll() is None, log.read_text()[-3000:]
        return dovecot.uids() == []

    try:
        # The mail arrives once both workers are up: until then the poller processes its
        # batches itself, and this test is about the hand-over.
        wait_for(lambda: log.read_text().count("ingest worker process ready") == 2, 60,
                 "two worker processes ready")  # fmt: skip
        dovecot.append_many(mails)
        wait_for(emptied, 120, "an empty INBOX")
        assert len(dovecot.uids("Processed")) == 60 and len(dovecot.uids("Errors")) == 1
        states = dict(sqlite_rows(db, "SELECT state, count(*) FROM raw_messages GROUP BY 1"))
        assert states == {"processed": 60, "failed": 1}, log.read_text()[-3000:]
        assert sqlite_rows(db, "SELECT count(*) FROM tickets") == [(60,)]
        wait_for(lambda: sqlite_rows(db, "SELECT last_uid FROM imap_mailboxes") == [(61,)],
                 10, "last_uid 61")  # fmt: skip
        # Processed by the workers (each claims under its own instance name), not the poller.
        by = "SELECT DISTINCT claimed_by FROM raw_messages WHERE state = 'processed'"
        claimers = sqlite_rows(db, by)
        assert claimers and all(c and c != f"{socket.gethostname()}:{proc.pid}"
                                for (c,) in claimers), claimers  # fmt: skip
    finally:
        proc.terminate()
        assert proc.wait(40) == 0, log.read_text()[-3000:]


def test_processes_is_validated_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "buzon.toml"
    config.write_text("[ingest]\nprocesses = -1\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    assert "ingest.processes" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_processes_zero_means_one_per_core(tmp_path: Path) -> None:
    config = tmp_path / "buzon.toml"
    config.write_text("[ingest]\nprocesses = 0\n")
    assert load_settings(config).ingest.worker_processes() == len(os.sched_getaffinity(0))
    config.write_text("[ingest]\nprocesses = 3\n")
    assert load_settings(config).ingest.worker_processes() == 3
