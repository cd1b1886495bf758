"""Issue 17, part A: a PostgreSQL partition, SMTP timeouts, session caps and memory.

Every test drives a real component: buzón's SMTP listener (in-process via `serve_smtp`,
or a real `buzon smtp` process) in front of the local PostgreSQL, reached through a TCP
proxy that can black-hole the traffic (tests/fixtures/tcp_proxy.py).
"""

from __future__ import annotations

import email.policy
import json
import logging
import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from daemon.wiring import App
from tests.fixtures.smtp_listener import SmtpServer, serve_smtp
from tests.fixtures.tcp_proxy import TcpProxy
from tests.helpers import free_port, greeting, make_app, vm_hwm, wait_for_greeting
from tests.mailbuilder import mail
from tickets.models import Article, RawMessage

ROOT = Path(__file__).resolve().parents[1]
SUPPORT = "soporte@soporte.example"
# Small bounds, so that a partition shows within seconds.
FAST_DB = {
    "connect_timeout": 2,
    "keepalives_idle": 2,
    "keepalives_interval": 1,
    "keepalives_count": 2,
    "tcp_user_timeout": 3,
    "statement_timeout": 5,
    "lock_timeout": 5,
    "idle_in_transaction_timeout": 10,
    "pool_timeout": 2,
    "health_check_timeout": 1,
    "worker_stuck_after": 3,
}
STORE_TIMEOUT = 2.0


# --- helpers ----------------------------------------------------------------------------------


@pytest.fixture
def pg_proxy(pg_url: str) -> Iterator[tuple[TcpProxy, str]]:
    """A black-holing proxy in front of PostgreSQL, and the test schema's URL through it."""
    url = make_url(pg_url)
    with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        proxied = url.set(host="127.0.0.1", port=proxy.port)
        yield proxy, proxied.render_as_string(hide_password=False)


def send(port: int, raw: bytes, timeout: float = 30.0) -> int:
    """One mail in one connection; the code of the answer to DATA (0: connection lost)."""
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=timeout) as client:
            client.ehlo()
            client.mail("ana@clinica.example")
            client.rcpt(SUPPORT)
            code, _ = client.data(raw)
            return code
    except (smtplib.SMTPServerDisconnected, ConnectionError):
        return 0


def numbered(n: int) -> tuple[str, bytes]:
    mid = f"<part-a-{n}-{os.getpid()}@clinica.example>"
    return mid, mail("Ana <ana@clinica.example>", f"Consulta {n}", f"Texto {n}", msgid=mid)


def articles_by_message_id(app: App) -> dict[str, int]:
    with app.sessions() as session:
        rows = session.execute(
            select(Article.message_id, func.count()).group_by(Article.message_id)
        )
        return {f"<{mid}>": n for mid, n in rows if mid and str(mid).startswith("part-a-")}


def pg_app(tmp_path: Path, url: str) -> App:
    return make_app(tmp_path, url, support_addresses=[SUPPORT], database=FAST_DB)


# --- 1. a PostgreSQL partition ----------------------------------------------------------------


@pytest.mark.parametrize("reset", [False, True], ids=["short-partition", "connections-died"])
def test_partition_answers_451_within_bound_then_intake_and_processing_resume(
    tmp_path: Path, pg_proxy: tuple[TcpProxy, str], reset: bool
) -> None:
    proxy, url = pg_proxy
    app = pg_app(tmp_path, url)
    acked: list[str] = []
    with serve_smtp(app, store_timeout=STORE_TIMEOUT) as server:
        mid, raw = numbered(0)
        assert send(server.port, raw) == 250
        acked.append(mid)
        server.wait_processed()

        proxy.blackhole()
        refused = [numbered(n) for n in range(1, 5)]
        started = time.monotonic()
        with ThreadPoolExecutor(len(refused)) as pool:
            codes = list(pool.map(lambda m: send(server.port, m[1]), refused))
        latency = time.monotonic() - started
        print(f"451 under blackhole: {len(refused)} concurrent mails answered in {latency:.2f}s")
        assert codes == [451] * len(refused)
        assert latency < STORE_TIMEOUT + 1.5

        proxy.heal(reset=reset)
        # Intake resumes by itself: the senders' retries (the refused mails too) get 250.
        for mid, raw in [*refused, numbered(9)]:
            deadline = time.monotonic() + 30
            while (code := send(server.port, raw)) != 250:
                assert time.monotonic() < deadline, f"still {code} after the heal"
                time.sleep(0.5)
            acked.append(mid)
        server.wait_processed(timeout=60)

    # Nothing acknowledged is lost, and no mail is stored twice: the writer takes what is
    # waiting only once it holds a connection, so the mails whose senders heard 451 while
    # it was held were failed or skipped, not committed after the heal.
    assert articles_by_message_id(app) == {mid: 1 for mid in acked}
    with app.sessions() as session:
        stored = session.scalar(select(func.count()).select_from(RawMessage)) or 0
    print(f"raw rows {stored} for {len(acked)} mails: {stored - len(acked)} late commit(s)")
    if not reset:
        assert stored == len(acked)
    app.engine.dispose()


def test_stuck_worker_and_dead_store_are_not_ready_and_starve_the_watchdog(
    tmp_path: Path, pg_proxy: tuple[TcpProxy, str]
) -> None:
    """`/readyz`, `/metrics` and the systemd watchdog of a real `buzon smtp` process while
    the store is black-holed, then after the heal."""
    proxy, url = pg_proxy
    pg_app(tmp_path, url).engine.dispose()  # the schema, through the proxy
    with BuzonProcess(tmp_path, url) as buzon:
        assert send(buzon.smtp_port, numbered(0)[1]) == 250
        deadline = time.monotonic() + 30  # ready as a whole: the workers start beside intake
        while buzon.ready()[0] != 200:
            assert time.monotonic() < deadline, buzon.log.read_text()[-3000:]
            time.sleep(0.1)
        assert buzon.watchdog_pings(within=2.0) > 0

        proxy.blackhole()
        time.sleep(FAST_DB["worker_stuck_after"] + 1.5)
        started = time.monotonic()
        code, body = buzon.ready()
        assert time.monotonic() - started < 5, "/readyz must answer while the store hangs"
        assert code == 503 and body["checks"]["ingest"].startswith("FAIL: stuck")
        assert body["checks"]["database"].startswith("FAIL")
        metrics = buzon.metrics()
        assert "buzon_worker_stuck 1.0" in metrics
        age = float(metrics.split("\nbuzon_worker_last_progress_age_seconds ")[1].split()[0])
        assert age > FAST_DB["worker_stuck_after"]
        assert buzon.watchdog_pings(within=2.0) == 0, "the watchdog was fed with the store away"

        proxy.heal(reset=True)
        deadline = time.monotonic() + 30
        while buzon.ready()[0] != 200:
            assert time.monotonic() < deadline, buzon.log.read_text()[-3000:]
            time.sleep(0.5)
        assert "buzon_worker_stuck 0.0" in buzon.metrics()
        assert buzon.watchdog_pings(within=2.0) > 0


def test_sigterm_stops_within_grace_while_the_store_is_black_holed(
    tmp_path: Path, pg_proxy: tuple[TcpProxy, str]
) -> None:
    proxy, url = pg_proxy
    pg_app(tmp_path, url).engine.dispose()
    with BuzonProcess(tmp_path, url, grace=3.0) as buzon:
        assert send(buzon.smtp_port, numbered(0)[1]) == 250
        proxy.blackhole()
        assert send(buzon.smtp_port, numbered(1)[1]) == 451  # a writer now hangs
        time.sleep(1.0)  # the worker's next pass hangs too
        started = time.monotonic()
        buzon.proc.send_signal(signal.SIGTERM)
        try:
            buzon.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"SIGTERM ignored for 30 s:\n{buzon.log.read_text()[-3000:]}")
        took = time.monotonic() - started
        print(f"SIGTERM under blackhole: exited {buzon.proc.returncode} after {took:.1f}s")
        assert took < 3.0 + 8.0  # the grace, the store's bound, and the exit itself
    proxy.heal(reset=True)


class BuzonProcess:
    """`python -m daemon smtp` on PostgreSQL with HTTP and a fake systemd notify socket."""

    def __init__(self, tmp_path: Path, url: str, grace: float = 5.0) -> None:
        self.tmp_path = tmp_path
        self.url = url
        self.grace = grace
        self.log = tmp_path / "buzon.log"
        self.smtp_port = free_port()
        self.http_port = free_port()
        self.notify_path = tmp_path / "notify.sock"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.notify_path))
        self.proc: subprocess.Popen[bytes]

    def __enter__(self) -> BuzonProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BUZON_")}
        env.update(
            BUZON_DATA_DIR=str(self.tmp_path / "data"),
            BUZON_DATABASE_URL=self.url,
            BUZON_SECRET_KEY="test-secret-0123456789",
            BUZON_SUPPORT_ADDRESSES=json.dumps([SUPPORT]),
            BUZON_DATABASE=json.dumps(FAST_DB),
            BUZON_INGEST__POLL_INTERVAL="0.2",
            BUZON_SMTP__STORE_TIMEOUT=str(STORE_TIMEOUT),
            BUZON_SMTP__SHUTDOWN_GRACE=str(self.grace),
            NOTIFY_SOCKET=str(self.notify_path),
            WATCHDOG_USEC="1000000",  # pings every 0.5 s
        )
        cmd = [sys.executable, "-m", "daemon", "smtp", "--listen", f"127.0.0.1:{self.smtp_port}"]
        cmd += ["--http", f"127.0.0.1:{self.http_port}"]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=log, env=env)
        deadline = time.monotonic() + 30
        while not greeting(self.smtp_port).startswith(b"220"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"buzon smtp did not start:\n{self.log.read_text()}")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.notify.close()

    def _get(self, path: str) -> tuple[int, bytes]:
        url = f"http://127.0.0.1:{self.http_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def ready(self) -> tuple[int, dict[str, Any]]:
        code, body = self._get("/readyz")
        return code, json.loads(body)

    def metrics(self) -> str:
        return self._get("/metrics")[1].decode()

    def watchdog_pings(self, within: float) -> int:
        """WATCHDOG=1 datagrams received over the next `within` seconds (older ones dropped)."""
        self.notify.setblocking(False)
        while True:
            try:
                self.notify.recv(4096)
            except BlockingIOError:
                break
        self.notify.settimeout(0.1)
        pings = 0
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                pings += self.notify.recv(4096) == b"WATCHDOG=1"
            except TimeoutError:
                continue
        return pings


# --- 2. idle timeout per read, a total bound for DATA -----------------------------------------


class Client:
    """A bare SMTP client on a socket, to send as slowly as the test wants."""

    def __init__(self, port: int, source: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection(
            ("127.0.0.1", port), timeout=30, source_address=(source, 0)
        )
        self.file = self.sock.makefile("rb")
        self.greeting = self.reply()

    def reply(self) -> str:
        """The whole (multi-line) reply; '' when the server closed the connection."""
        lines = []
        while line := self.file.readline().decode():
            lines.append(line)
            if line[3:4] != "-":
                break
        return "".join(lines)

    def command(self, line: str) -> str:
        self.sock.sendall(line.encode() + b"\r\n")
        return self.reply()

    def start_data(self) -> None:
        assert self.command("EHLO cliente.example").startswith("250")
        assert self.command("MAIL FROM:<ana@clinica.example>").startswith("250")
        assert self.command(f"RCPT TO:<{SUPPORT}>").startswith("250")
        assert self.command("DATA").startswith("354")

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def test_idle_timeout_is_per_read_so_a_slow_but_steady_data_is_accepted(
    sqlite_app: App,
) -> None:
    with serve_smtp(sqlite_app, idle_timeout=1.5, data_timeout=60) as server:
        client = Client(server.port)
        client.start_data()
        mid, raw = numbered(20)
        lines = raw.split(b"\r\n") if b"\r\n" in raw else raw.split(b"\n")
        started = time.monotonic()
        for line in lines:  # one line every 0.4 s: 4 s in all, well over idle_timeout
            client.sock.sendall(line + b"\r\n")
            time.sleep(4.0 / len(lines))
        assert time.monotonic() - started > 2 * 1.5
        answer = client.command(".")
        client.close()
        assert answer.startswith("250"), answer
        server.wait_processed()
        assert articles_by_message_id(server.app) == {mid: 1}


def test_a_silent_client_and_an_endless_data_hear_421(sqlite_app: App) -> None:
    with serve_smtp(sqlite_app, idle_timeout=1.0, data_timeout=2.5) as server:
        silent = Client(server.port)
        silent.start_data()
        started = time.monotonic()
        assert silent.reply().startswith("421 4.4.2")  # silence in DATA: the idle timeout
        assert 0.9 < time.monotonic() - started < 2.0
        silent.close()

        trickle = Client(server.port)
        trickle.start_data()
        started = time.monotonic()
        try:
            while time.monotonic() - started < 6:
                trickle.sock.sendall(b"X-Relleno: uno por medio segundo\r\n")
                time.sleep(0.5)
        except OSError:
            pass  # closed under us: expected
        answer = trickle.reply()
        assert answer.startswith("421 4.4.2"), answer
        assert time.monotonic() - started < 4.0  # data_timeout, not the 6 s of trickle
        trickle.close()
        assert server.unprocessed() == 0 and articles_by_message_id(server.app) == {}


# --- 3. session caps, log flooding, large DATA in flight --------------------------------------


def test_sessions_are_capped_in_all_and_per_client_ip(sqlite_app: App) -> None:
    with serve_smtp(sqlite_app, max_sessions=4, max_sessions_per_ip=2) as server:
        # The fixture's probe connection has closed; loopback has many source addresses.
        first = [Client(server.port) for _ in range(2)]
        assert all(c.greeting.startswith("220") for c in first)
        third = Client(server.port)
        assert third.greeting.startswith("421 4.7.0"), third.greeting
        assert third.reply() == ""  # and closed
        others = [Client(server.port, source=f"127.0.0.{n}") for n in (2, 3)]
        assert all(c.greeting.startswith("220") for c in others)
        over = Client(server.port, source="127.0.0.4")
        assert over.greeting.startswith("421 4.7.0"), over.greeting
        # A session ends: its place is free again, for the same address too.
        first[0].command("QUIT")
        first[0].close()
        time.sleep(0.2)
        again = Client(server.port)
        assert again.greeting.startswith("220"), again.greeting
        assert again.command("QUIT").startswith("221")
        for c in [*first[1:], third, *others, over, again]:
            c.close()


def test_client_text_in_aiosmtpd_warnings_does_not_reach_the_log(
    smtp_server: SmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    client = Client(smtp_server.port)
    for n in range(4):
        client.command(f"XFLOOD{n} " + "relleno-del-cliente " * 20)
    client.close()
    time.sleep(0.2)
    echoed = [
        r for r in caplog.records if "XFLOOD" in r.getMessage() or "relleno" in r.getMessage()
    ]
    assert echoed == [], [f"{r.levelname} {r.name}: {r.getMessage()[:80]}" for r in echoed]


# Only the listener of `buzon smtp` (no ingest worker, whose parsing memory is another
# matter): the process's peak RSS then measures what DATA in flight costs.
LISTENER_ONLY = """
import asyncio, json, signal, sys
from daemon.config import load_settings
from daemon.wiring import App
settings = load_settings(None, **json.loads(sys.argv[1]))
app = App(settings)
app.prepare()
listener = app.smtp_listener(None)
async def main() -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await listener.run(stop)
asyncio.run(main())
"""


def big_mail(n: int, size: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Cliente {n} <c{n}@clinica.example>"
    msg["To"] = SUPPORT
    msg["Subject"] = f"Estudios {n}"
    msg["Message-ID"] = f"<big-{n}-{os.getpid()}@clinica.example>"
    msg.set_content("Adjunto los estudios.")
    # Random bytes: base64 makes them 4/3 larger, in 78-byte lines like a real attachment.
    pdf = os.urandom(size * 3 // 4)
    msg.add_attachment(pdf, maintype="application", subtype="pdf", filename=f"e{n}.pdf")
    return msg.as_bytes(policy=email.policy.SMTP)


@pytest.mark.slow
def test_six_concurrent_24mb_mails_keep_the_listener_peak_rss_bounded(tmp_path: Path) -> None:
    port = free_port()
    settings = {
        "data_dir": str(tmp_path / "data"),
        "secret_key": "test-secret-0123456789",
        "support_addresses": [SUPPORT],
        "smtp": {"listen": f"127.0.0.1:{port}"},  # default large-DATA slots: 2 above 4 MiB
    }
    log = (tmp_path / "listener.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-c", LISTENER_ONLY, json.dumps(settings)],
        cwd=ROOT,
        stdout=log,
        stderr=log,
    )
    try:
        wait_for_greeting(port, proc, 30)
        mails = [big_mail(n, 24_000_000) for n in range(6)]
        start = vm_hwm(proc.pid) / 2**20
        with ThreadPoolExecutor(6) as pool:
            codes = list(pool.map(lambda raw: send(port, raw, timeout=300), mails))
        peak = vm_hwm(proc.pid) / 2**20
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
    print(f"six 24 MB mails: listener peak RSS {peak:.0f} MB (start {start:.0f} MB)")
    assert codes == [250] * 6  # every one accepted, the waiting ones too
    # Measured: 429 MB above the start with every DATA in memory at once, 236 with the cap.
    assert peak - start < 300
