"""SMTP intake benchmark: a bare aiosmtpd server against buzón's durable acceptance.

For each message size (3 KB, 60 KB, 1 MB by default) the same load — N messages over C
concurrent connections from an asyncio client in this process — goes to:

  (a) a bare aiosmtpd server (separate process) whose handler accepts and discards: the
      baseline, what aiosmtpd itself costs;
  (b) a real `buzon smtp` process on SQLite (WAL) in a temp dir, as deployed: 250 only after
      the commit, the ingest worker processes (`ingest.processes`, --processes) running
      alongside — its rate is the acceptance rate while processing runs;
  (b0) buzón's durable acceptance alone, no worker.

"all" is (b) as deployed until every mail is processed: messages / (time to the last 250
+ time until nothing is pending). The three run interleaved in each of --repetitions
repetitions; the ratios to (a) are printed per repetition, then their median and range.

    .venv/bin/python bench/smtp_intake.py                 # defaults: a few minutes on 2 cores
    .venv/bin/python bench/smtp_intake.py --sizes 3 --repetitions 5 --processes 1
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUPPORT = "soporte@soporte.example"
DEFAULT_COUNTS = {3: 1000, 60: 400, 1024: 60}


# --- the bare baseline server (run in a child process) ------------------------------------


def serve_bare(port: int, max_size: int) -> None:
    """aiosmtpd with a handler that accepts and discards; same limits as buzón's."""
    from aiosmtpd.smtp import SMTP

    class Discard:
        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            return "250 2.0.0 OK"

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SMTP(
                Discard(), data_size_limit=max_size, enable_SMTPUTF8=True, hostname="bare"
            ),
            "127.0.0.1",
            port,
        )
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        server.close()
        await server.wait_closed()

    asyncio.run(main())


def serve_intake_only(port: int, data_dir: str) -> None:
    """buzón's listener and durable acceptance alone: processing deferred (no worker)."""
    sys.path.insert(0, str(ROOT))
    from daemon.config import load_settings
    from daemon.supervisor import run_loop
    from daemon.wiring import App

    settings = load_settings(
        None,
        data_dir=data_dir,
        support_addresses=[SUPPORT],
        secret_key="bench-secret-0123456789",
        smtp={"max_messages_per_connection": 100000},
    )
    app = App(settings)
    app.prepare()

    async def main() -> None:
        listener = app.smtp_listener(None, bind=("127.0.0.1", port))
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await listener.run(stop)

    run_loop(main())  # the serving commands' loop (uvloop when installed)


# --- the load -----------------------------------------------------------------------------


def build_mail(n: int, size_kb: int) -> bytes:
    """A realistic mail of about size_kb: text, plus an attachment for the larger sizes."""
    msg = EmailMessage()
    msg["From"] = f"Cliente {n} <cliente{n}@clinica.example>"
    msg["To"] = SUPPORT
    msg["Subject"] = f"Consulta {n}: no puedo agendar la cita"
    msg["Message-ID"] = make_msgid(domain="bench.example")
    text = "Buenos días, no puedo agendar la cita desde el portal. Gracias.\n"
    if size_kb <= 4:
        msg.set_content(text * max(1, (size_kb * 1024 - 400) // len(text)))
    else:
        msg.set_content(text)
        payload = os.urandom(int(size_kb * 1024 * 0.74))  # base64 grows it by 4/3
        msg.add_attachment(payload, maintype="application", subtype="pdf", filename="f.pdf")
    raw = msg.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    # Dot-stuffing (RFC 5321 4.5.2), done once here rather than in the timed loop.
    stuffed = b"\r\n".join(
        b"." + line if line.startswith(b".") else line for line in raw.split(b"\r\n")
    )
    return stuffed if stuffed.endswith(b"\r\n") else stuffed + b"\r\n"


async def read_reply(reader: asyncio.StreamReader) -> bytes:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("server closed the connection")
        if line[3:4] != b"-":
            return line


async def expect(reader: asyncio.StreamReader, code: bytes) -> None:
    reply = await read_reply(reader)
    if not reply.startswith(code):
        raise RuntimeError(f"expected {code!r}, got {reply!r}")


async def one_connection(
    port: int, queue: asyncio.Queue[bytes], latencies: list[float]
) -> None:  # fmt: skip
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**20)
    await expect(reader, b"220")
    writer.write(b"EHLO bench.client.example\r\n")
    await expect(reader, b"250")
    while not queue.empty():
        raw = queue.get_nowait()
        start = time.perf_counter()
        writer.write(b"MAIL FROM:<bench@client.example>\r\n")
        await expect(reader, b"250")
        writer.write(f"RCPT TO:<{SUPPORT}>\r\n".encode())
        await expect(reader, b"250")
        writer.write(b"DATA\r\n")
        await expect(reader, b"354")
        writer.write(raw + b".\r\n")
        await writer.drain()
        await expect(reader, b"250")
        latencies.append(time.perf_counter() - start)
    writer.write(b"QUIT\r\n")
    await read_reply(reader)
    writer.close()
    await writer.wait_closed()


@dataclass
class Result:
    count: int
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    def pct(self, q: float) -> float:
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[int(q) - 1] * 1000


async def load(port: int, mails: list[bytes], connections: int) -> Result:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for raw in mails:
        queue.put_nowait(raw)
    latencies: list[float] = []
    start = time.perf_counter()
    await asyncio.gather(*(one_connection(port, queue, latencies) for _ in range(connections)))
    return Result(len(latencies), time.perf_counter() - start, latencies)


# --- the servers --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                if sock.makefile("rb").readline().startswith(b"220"):
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server did not start")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_bare(mails: list[bytes], connections: int, max_size: int) -> Result:
    port = free_port()
    cmd = [sys.executable, __file__, "--bare-server", str(port), "--max-size", str(max_size)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, proc)
        return asyncio.run(load(port, mails, connections))
    finally:
        stop(proc)


def run_intake_only(mails: list[bytes], connections: int) -> Result:
    with tempfile.TemporaryDirectory(prefix="buzon-bench-") as tmp:
        port = free_port()
        cmd = [sys.executable, __file__, "--intake-only-server", str(port), "--data-dir", tmp]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_listening(port, proc)
            return asyncio.run(load(port, mails, connections))
        finally:
            stop(proc)


def run_buzon(
    mails: list[bytes], connections: int, max_size: int, processes: int
) -> tuple[Result, float]:
    """Returns the intake result and the seconds from the last 250 until nothing is pending."""
    import sqlite3

    with tempfile.TemporaryDirectory(prefix="buzon-bench-") as tmp:
        db = Path(tmp) / "buzon.db"
        config = Path(tmp) / "buzon.toml"
        config.write_text(
            f'data_dir = "{tmp}/data"\ndatabase_url = "sqlite:///{db}"\n'
            f'support_addresses = ["{SUPPORT}"]\nsecret_key = "bench-secret-0123456789"\n'
            f"[ingest]\nprocesses = {processes}\n"
            f"[smtp]\nmax_message_size = {max_size}\nmax_messages_per_connection = 100000\n"
            "[http]\nenabled = false\n"
        )
        port = free_port()
        cmd = [sys.executable, "-m", "daemon", "smtp", "--config", str(config)]
        cmd += ["--listen", f"127.0.0.1:{port}"]
        log_path = Path(tmp) / "buzon.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=log)
        try:
            wait_listening(port, proc)
            wait_workers(log_path, processes)
            result = asyncio.run(load(port, mails, connections))
            done = time.perf_counter()
            with sqlite3.connect(db) as conn:
                query = "SELECT count(*) FROM raw_messages WHERE state IN ('pending','processing')"
                while conn.execute(query).fetchone()[0]:
                    time.sleep(0.1)
            return result, time.perf_counter() - done
        finally:
            stop(proc)


def wait_workers(log: Path, processes: int, timeout: float = 120.0) -> None:
    """Worker processes start after the listener: measure only once they all run."""
    wanted = processes or os.cpu_count() or 1
    if wanted == 1:
        return
    deadline = time.monotonic() + timeout
    while log.read_text(errors="replace").count("ingest worker process ready") < wanted:
        if time.monotonic() > deadline:
            raise RuntimeError("worker processes did not start")
        time.sleep(0.1)


# --- report -------------------------------------------------------------------------------


def machine() -> str:
    cpu = "?"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as fh:
        mem_kb = int(fh.readline().split()[1])
    return (
        f"nproc {os.cpu_count()}, {cpu}, {mem_kb / 2**20:.0f} GiB RAM, "
        f"Python {platform.python_version()}, {platform.platform()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="3,60,1024", help="message sizes in KB")
    parser.add_argument("--count", type=int, help="messages per size (default: 1000/400/60)")
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument(
        "--processes", type=int, default=0, help="ingest.processes of (b) (0: one per core)"
    )
    parser.add_argument("--bare-server", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--intake-only-server", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--max-size", type=int, default=25 * 2**20, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_server:
        serve_bare(args.bare_server, args.max_size)
        return
    if args.intake_only_server:
        serve_intake_only(args.intake_only_server, args.data_dir)
        return

    print(f"machine: {machine()}")
    print(
        f"{args.connections} concurrent connections; latency = MAIL FROM → 250 after DATA (ms)\n"
        "(a) bare aiosmtpd, accept and discard   (b) buzón as deployed: durable acceptance on\n"
        f"SQLite + ingest.processes = {args.processes} alongside   (b0) buzón's durable "
        "acceptance alone, no worker;\ndrain = seconds from the last 250 of (b) until "
        "everything is processed; all = (b) until all processed\n"
    )
    header = (
        f"{'size':>6} {'rep':>3} | {'(a) msg/s':>9} {'p50':>6} {'p99':>6} | "
        f"{'(b) msg/s':>9} {'p50':>6} {'p99':>6} {'b/a':>5} | "
        f"{'(b0) msg/s':>10} {'p50':>6} {'p99':>6} {'b0/a':>5} | {'drain':>6} {'all/a':>6}"
    )
    print(header)
    print("-" * len(header))
    for size_kb in (int(s) for s in args.sizes.split(",")):
        count = args.count or DEFAULT_COUNTS.get(size_kb, 200)
        mails = [build_mail(n, size_kb) for n in range(count)]
        max_size = 25 * 2**20
        label = f"{size_kb} KB" if size_kb < 1024 else f"{size_kb // 1024} MB"
        ratios: dict[str, list[float]] = {"b/a": [], "b0/a": [], "all/a": []}
        for rep in range(1, args.repetitions + 1):
            bare = run_bare(mails, args.connections, max_size)
            buzon, drain = run_buzon(mails, args.connections, max_size, args.processes)
            alone = run_intake_only(mails, args.connections)
            everything = count / (buzon.seconds + drain)
            ratios["b/a"].append(buzon.rate / bare.rate)
            ratios["b0/a"].append(alone.rate / bare.rate)
            ratios["all/a"].append(everything / bare.rate)
            print(
                f"{label:>6} {rep:>3} | {_cols(bare)} | {_cols(buzon)} "
                f"{ratios['b/a'][-1]:>5.3f} | {_cols(alone, 10)} "
                f"{ratios['b0/a'][-1]:>5.3f} | {drain:>6.1f} {ratios['all/a'][-1]:>6.3f}",
                flush=True,
            )
        summary = ", ".join(
            f"{name} {statistics.median(v):.3f} ({min(v):.3f}–{max(v):.3f})"
            for name, v in ratios.items()
        )
        print(f"{label:>6} median (range): {summary}; load average {os.getloadavg()[0]:.2f}")


def _cols(result: Result, width: int = 9) -> str:
    return f"{result.rate:>{width}.0f} {result.pct(50):>6.1f} {result.pct(99):>6.1f}"


if __name__ == "__main__":
    main()
