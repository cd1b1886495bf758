"""Several real buzón processes on one PostgreSQL database (issue #8).

Each instance is a separate `python -m daemon smtp` (or `imap`) process with its own
listen port and `instance_name`, sharing the database, the secret key and the data dir,
exactly as two machines behind one MX would. Senders fail over between listeners the way
an MTA does: a refused connection or a dropped session means "try the next MX".
"""

from __future__ import annotations

import os
import random
import signal
import smtplib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import ProgrammingError

from tests.fixtures.dovecot import (  # noqa: F401 (the fixtures are used by name)
    Dovecot,
    dovecot_factory_fixture,
    dovecot_fixture,
)
from tests.mailbuilder import mail, message_id
from tests.test_smtp_process import free_port, greeting

ROOT = Path(__file__).resolve().parents[1]
SUPPORT = "soporte@soporte.example"
# Error texts that must never reach a log: a consistent lock order (and the retry in
# `process`) is supposed to make them impossible.
LOCK_ERRORS = ("deadlock detected", "could not serialize", "SerializationFailure")
# How many mails the big run sends: the 5,000, which takes 130-150 s on the
# 2-core CI machine (~35 mails/s processed by three instances, CPU-bound; see
# bench/RESULTS.md, "Scale-out"). BUZON_SCALE_MAILS=500 for a quick local run.
SCALE_MAILS = int(os.environ.get("BUZON_SCALE_MAILS", "5000"))

pytestmark = pytest.mark.postgres


class Instance:
    """One buzón process with its own port, name and log; database and data dir shared."""

    def __init__(self, root: Path, name: str, db_url: str, extra: str = "") -> None:
        self.name = name
        self.config = root / f"{name}.toml"
        self.log = root / f"{name}.log"
        self.port = free_port()
        self.config.write_text(
            f'data_dir = "{root / "shared-data"}"\n'
            f'database_url = "{db_url}"\n'
            f'instance_name = "{name}"\n'
            f'support_addresses = ["{SUPPORT}"]\n'
            'secret_key = "scale-out-secret"\n'
            "[ingest]\npoll_interval = 0.2\nstale_claim_seconds = 10\n"
            "[smtp]\nshutdown_grace = 5\n"
            "[http]\nenabled = false\n" + extra
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, command: str = "smtp") -> None:
        cmd = [sys.executable, "-m", "daemon", command, "--config", str(self.config)]
        if command == "smtp":
            cmd += ["--listen", f"127.0.0.1:{self.port}"]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=log)

    def wait_greeting(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not greeting(self.port).startswith(b"220"):
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, f"{self.name} did not greet:\n{self.logtext()}"
            time.sleep(0.05)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers; always by this process's own PID."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def logtext(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextmanager
def instances(
    tmp_path: Path, db_url: str, count: int, command: str = "smtp", extra: str = ""
) -> Iterator[list[Instance]]:
    group = [Instance(tmp_path, f"uno-{i}", db_url, extra) for i in range(count)]
    with ExitStack() as stack:
        for one in group:
            stack.callback(one.stop)
        # One after the other: the first applies the migrations, the others find them done.
        for one in group:
            one.start(command)
            if command == "smtp":
                one.wait_greeting()
        yield group


class Database:
    def __init__(self, url: str) -> None:
        self.engine = create_engine(url)

    def rows(self, sql: str, **params: object) -> list[tuple[object, ...]]:
        with self.engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(sql), params)]

    def one(self, sql: str, **params: object) -> object:
        return self.rows(sql, **params)[0][0]

    def wait_for(self, sql: str, expected: object, timeout: float, why: str = "") -> None:
        """Poll until `sql` gives `expected`; a schema not migrated yet counts as not yet."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.one(sql) == expected:
                    return
            except ProgrammingError:
                pass
            assert time.monotonic() < deadline, f"{sql} never gave {expected!r}\n{why}"
            time.sleep(0.1)

    def wait_processed(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        waiting = "SELECT count(*) FROM raw_messages WHERE state IN ('pending', 'processing')"
        while left := self.one(waiting):
            assert time.monotonic() < deadline, f"{left} rows still unprocessed"
            time.sleep(0.2)


class Senders:
    """Client threads; mail j of a thread goes to listener j mod n, so consecutive mails
    of one thread (and replies to one ticket) land on different instances. A failed
    delivery moves on to the next listener and sends the same mail again, like an MTA."""

    def __init__(self, ports: Sequence[int], mails: Sequence[bytes], threads: int) -> None:
        self.ports = list(ports)
        self.acked: list[str] = []
        self.lock = threading.Condition()
        self.errors: list[str] = []
        self.threads = [
            threading.Thread(target=self._send, args=(i, mails[i::threads]), daemon=True)
            for i in range(threads)
        ]

    def run(self) -> None:
        self.start()
        self.join()

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self, timeout: float = 300) -> None:
        for thread in self.threads:
            thread.join(timeout)
        assert not any(t.is_alive() for t in self.threads), "a sender is stuck"
        assert not self.errors, self.errors[:5]

    def wait_acked(self, count: int, timeout: float = 120.0) -> None:
        with self.lock:
            assert self.lock.wait_for(lambda: len(self.acked) >= count, timeout)

    def _send(self, index: int, mails: Sequence[bytes]) -> None:
        clients: dict[int, smtplib.SMTP] = {}
        dead: set[int] = set()
        try:
            for j, raw in enumerate(mails):
                port = self.ports[(index + j) % len(self.ports)]
                for _ in range(len(self.ports) * 3):
                    # A dropped session may be a listener's own limit: one fresh connection
                    # to the same port before it counts as gone.
                    if port not in dead and (
                        self._deliver(clients, port, raw) or self._deliver(clients, port, raw)
                    ):
                        break
                    dead.add(port)  # this MX is gone: the next one gets the mail
                    alive = [p for p in self.ports if p not in dead]
                    if not alive:
                        self.errors.append("every listener is gone")
                        return
                    port = alive[j % len(alive)]
                else:
                    self.errors.append(f"undeliverable: {message_id(raw)}")
        finally:
            for client in clients.values():
                try:
                    client.quit()
                except (smtplib.SMTPException, OSError):
                    client.close()

    def _deliver(self, clients: dict[int, smtplib.SMTP], port: int, raw: bytes) -> bool:
        try:
            if port not in clients:
                clients[port] = smtplib.SMTP("127.0.0.1", port, timeout=30)
            clients[port].sendmail("remitente@clinica.example", [SUPPORT], raw)
        except (smtplib.SMTPException, OSError):
            clients.pop(port, None)
            return False
        with self.lock:  # sendmail returned: that listener answered 250
            self.acked.append(mid(raw))
            self.lock.notify_all()
        return True


def mid(raw: bytes) -> str:
    """The Message-ID as the database stores it (without the angle brackets)."""
    return message_id(raw).strip("<>")


def sender(n: int) -> str:
    return f"Cliente {n} <cliente{n}@clinica.example>"


def assert_clean_logs(group: Sequence[Instance]) -> None:
    for one in group:
        log = one.logtext()
        for error in (*LOCK_ERRORS, "Traceback"):
            assert error not in log, f"{one.name}: {error}\n{log[-3000:]}"


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_three_instances_take_every_mail_once_and_thread_replies_across_them(
    tmp_path: Path, pg_url: str
) -> None:
    threads_count = 100  # first mails of threads; the rest are replies or new requests
    total = max(SCALE_MAILS, 2 * threads_count)
    rng = random.Random(8)
    db = Database(pg_url)
    with instances(tmp_path, pg_url, 3) as group:
        ports = [one.port for one in group]
        roots = [mail(sender(n), f"Consulta {n}", f"Primera {n}") for n in range(threads_count)]
        Senders(ports, roots, threads=6).run()
        db.wait_processed(60)
        ticket_of = dict(db.rows("SELECT message_id, ticket_id FROM raw_messages"))

        later: list[bytes] = []
        expected: dict[str, object] = {}  # reply's Message-ID → the root's ticket
        for k in range(total - threads_count):
            n = rng.randrange(threads_count)
            root_id = mid(roots[n])
            if k % 5 in (0, 1):  # a reply by In-Reply-To
                raw = mail(
                    sender(n), f"Re: Consulta {n}", f"Respuesta {k}", in_reply_to=f"<{root_id}>"
                )
                expected[mid(raw)] = ticket_of[root_id]
            elif k % 5 == 2:  # a reply by the subject tag, from the requester
                raw = mail(sender(n), f"Re: [#{ticket_of[root_id]}] Consulta {n}", f"Otra {k}")
                expected[mid(raw)] = ticket_of[root_id]
            else:
                raw = mail(sender(threads_count + k), f"Nueva {k}", f"Texto {k}")
            later.append(raw)
        started = time.monotonic()
        senders = Senders(ports, later, threads=9)
        senders.run()
        accepted_s = time.monotonic() - started
        db.wait_processed(180)
        processed_s = time.monotonic() - started
        assert_clean_logs(group)

    acked = [mid(raw) for raw in roots] + senders.acked
    assert len(acked) == len(set(acked)) == total
    copies = dict(db.rows("SELECT message_id, count(*) FROM raw_messages GROUP BY 1"))
    assert copies == dict.fromkeys(acked, 1)  # every acknowledged mail stored once
    states = dict(db.rows("SELECT state, count(*) FROM raw_messages GROUP BY 1"))
    assert states == {"processed": total}
    inbound = "FROM articles WHERE kind = 'inbound'"  # acknowledgements are articles too
    articles = dict(db.rows(f"SELECT message_id, ticket_id {inbound}"))
    assert len(articles) == db.one(f"SELECT count(*) {inbound}") == total
    wrong = {mid: (articles[mid], t) for mid, t in expected.items() if articles[mid] != t}
    assert not wrong, f"{len(wrong)} replies off their ticket, e.g. {list(wrong.items())[:3]}"
    assert db.one("SELECT count(*) FROM tickets") == total - len(expected)
    workers = dict(db.rows("SELECT claimed_by, count(*) FROM raw_messages GROUP BY 1"))
    assert set(workers) == {one.name for one in group}, workers  # all three did work
    print(
        f"\n{total} mails over 3 instances: accepted in {accepted_s:.1f} s, "
        f"processed in {processed_s:.1f} s; per instance {workers}"
    )
    db.engine.dispose()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_the_survivors_finish_what_a_killed_instance_had_claimed(
    tmp_path: Path, pg_url: str
) -> None:
    total = 600
    db = Database(pg_url)
    mails = [mail(sender(n), f"Consulta {n}", f"Texto {n}") for n in range(total)]
    with instances(tmp_path, pg_url, 3) as group:
        victim = group[0]
        senders = Senders([one.port for one in group], mails, threads=6)
        senders.start()
        senders.wait_acked(total // 3)
        victim.kill()
        orphans = {
            row[0]
            for row in db.rows(
                "SELECT id FROM raw_messages WHERE state = 'processing' AND claimed_by = :n",
                n=victim.name,
            )
        }
        senders.join()
        db.wait_processed(60)  # the survivors re-claim after stale_claim_seconds = 10
        assert_clean_logs(group[1:])

    assert orphans, "the killed instance had nothing claimed: the test proved nothing"
    claims = dict(db.rows("SELECT id, claimed_by FROM raw_messages"))
    assert {claims[i] for i in orphans} <= {group[1].name, group[2].name}
    acked = set(senders.acked)
    assert len(acked) == total  # the senders failed over: every mail got a 250 somewhere
    copies = dict(db.rows("SELECT message_id, count(*) FROM raw_messages GROUP BY 1"))
    assert set(copies) == acked
    # A mail stored by the victim whose 250 it never sent is sent again elsewhere: at most
    # one such mail per sender connection, and the second copy is a duplicate, not a ticket.
    assert sum(copies.values()) - total <= len(senders.threads)
    states = dict(db.rows("SELECT state, count(*) FROM raw_messages GROUP BY 1"))
    assert set(states) <= {"processed", "ignored"} and states["processed"] == total, states
    per_mail = dict(
        db.rows("SELECT message_id, count(*) FROM articles WHERE kind = 'inbound' GROUP BY 1")
    )
    assert per_mail == dict.fromkeys(acked, 1)
    assert db.one("SELECT count(*) FROM tickets") == total
    db.engine.dispose()


@pytest.mark.slow
@pytest.mark.dovecot
@pytest.mark.timeout(120)
def test_a_survivor_takes_over_the_imap_mailbox_of_a_killed_instance(
    tmp_path: Path, pg_url: str, dovecot: Dovecot
) -> None:
    lease_seconds = 3
    extra = (
        f"[imap]\nlease_seconds = {lease_seconds}\n"
        "reconnect_min_seconds = 0.05\nreconnect_max_seconds = 0.5\n"
        "[[imap.mailboxes]]\n"
        f'name = "soporte"\nhost = "{dovecot.host}"\nport = {dovecot.port}\n'
        f'security = "none"\nuser = "{dovecot.user}"\npassword = "{dovecot.password}"\n'
        "poll_interval = 0.5\n"
    )
    db = Database(pg_url)
    holder_sql = "SELECT holder FROM leases WHERE name = 'imap:soporte'"
    with instances(tmp_path, pg_url, 2, command="imap", extra=extra) as group:
        dovecot.append(mail(sender(1), "Antes", "hola"))
        logs = "\n".join(one.logtext() for one in group)
        db.wait_for("SELECT count(*) FROM tickets", 1, 30, logs)
        holder = str(db.one(holder_sql))
        dead, survivor = sorted(group, key=lambda one: one.name != holder)
        assert dead.name == holder
        dead.kill()
        killed = time.monotonic()
        dovecot.append(mail(sender(2), "Después", "hola"))
        db.wait_for("SELECT count(*) FROM tickets", 2, 30, survivor.logtext())
        taken_over = time.monotonic() - killed
        assert db.one(holder_sql) == survivor.name
        assert_clean_logs([survivor])
    # The lease lapses after lease_seconds; the survivor retries every third of it.
    assert taken_over < lease_seconds + 5
    assert db.one("SELECT count(*) FROM raw_messages") == 2
    db.engine.dispose()


def test_instances_starting_together_on_an_empty_database_both_migrate(
    tmp_path: Path, pg_url: str
) -> None:
    """Without the migration lock the loser of the DDL race exits 75 (duplicate pg_type)."""
    group = [Instance(tmp_path, f"dos-{i}", pg_url) for i in range(3)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "daemon", "db", "upgrade", "--config", str(one.config)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for one in group
    ]
    outputs = [proc.communicate(timeout=60)[0].decode() for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0], outputs
    db = Database(pg_url)
    assert db.one("SELECT count(*) FROM alembic_version") == 1
    db.engine.dispose()
