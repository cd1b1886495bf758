"""The SMTP side of the wire-speed benchmark, on bench/smtp_intake.py's client and servers:
bare aiosmtpd, buzón's acceptance alone (no worker), `buzon smtp` as deployed until every
mail is processed; and the peak RSS of `buzon smtp` for one ~25 MB mail.

The mails come from the anchors' generator (gen_messages.make_message), cached as files.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import smtplib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from pathlib import Path
from typing import Any

from bench import smtp_intake
from bench.wire_common import SUPPORT, Store, buzon_process, cpu_seconds, loadavg, rss_mb, stop

INTAKE = Path(smtp_intake.__file__)


def smtp_mails(anchors: Path, cache: Path, n: int) -> list[bytes]:
    """`n` distinct ~3 KB Spanish mails ('small' kind, ~30 % replies), dot-stuffed."""
    folder = cache / f"smtp3k_{n}"
    if len(list(folder.glob("*.eml"))) < n:
        gen = _generator(anchors)
        folder.mkdir(parents=True, exist_ok=True)
        rng = random.Random(3000)
        base = dt.datetime(2025, 6, 2, 8, 0, tzinfo=dt.timezone(dt.timedelta(hours=1)))
        earlier: list[Any] = []
        for i in range(n):
            when = base + dt.timedelta(minutes=2 * i)
            raw, info, flags = gen.make_message(rng, "small", when, earlier)
            if not flags["reply"]:
                earlier.append(info)
            (folder / f"{i:04d}.eml").write_bytes(raw)
    return [dot_stuff(p.read_bytes()) for p in sorted(folder.glob("*.eml"))[:n]]


def big_mail(anchors: Path, cache: Path) -> bytes:
    """~25 MB: a short Spanish text and an 18,000,000-byte PDF-like attachment."""
    path = cache / "big25.eml"
    if not path.exists():
        gen = _generator(anchors)
        msg = EmailMessage(policy=SMTP_POLICY)
        msg["From"] = "Lucía Sánchez <lucia.sanchez@example.es>"
        msg["To"] = f"Soporte Técnico <{SUPPORT[1]}>"
        msg["Subject"] = "Contrato firmado escaneado (adjunto grande)"
        msg["Message-ID"] = "<big25.20250603@example.es>"
        msg["Date"] = "Tue, 03 Jun 2025 10:00:00 +0200"
        msg.set_content("Buenos días,\n\nLes adjunto el contrato escaneado.\n\nUn saludo,\nLucía\n")
        pdf = gen.pdf_like(random.Random(25), 18_000_000)
        msg.add_attachment(pdf, maintype="application", subtype="pdf", filename="contrato.pdf")
        path.write_bytes(msg.as_bytes())
    return path.read_bytes()


def _generator(anchors: Path) -> Any:
    sys.path.insert(0, str(anchors))
    import gen_messages

    return gen_messages


def dot_stuff(raw: bytes) -> bytes:
    """CRLF line ends and RFC 5321 dot-stuffing, done once rather than in the timed loop."""
    lines = raw.replace(b"\r\n", b"\n").split(b"\n")
    stuffed = b"\r\n".join(b"." + line if line.startswith(b".") else line for line in lines)
    return stuffed if stuffed.endswith(b"\r\n") else stuffed + b"\r\n"


@contextlib.contextmanager
def _buzon_smtp(
    python: str, root: Path, extra: str
) -> Iterator[tuple[subprocess.Popen[bytes], Store, int]]:
    """`buzon smtp` on a free loopback port, once it greets."""
    port = smtp_intake.free_port()
    listen = ("--listen", f"127.0.0.1:{port}")
    with buzon_process(python, "smtp", root, None, extra, *listen) as (proc, store):
        smtp_intake.wait_listening(port, proc, timeout=60)
        yield proc, store, port


def _accept(port: int, mails: list[bytes], connections: int) -> smtp_intake.Result:
    return asyncio.run(smtp_intake.load(port, mails, connections))


def bare(mails: list[bytes], connections: int) -> dict[str, Any]:
    """aiosmtpd accepting and discarding: the baseline."""
    port = smtp_intake.free_port()
    cmd = [sys.executable, str(INTAKE), "--bare-server", str(port)]
    return _accept_only(cmd, port, mails, connections)


def acceptance_only(mails: list[bytes], connections: int) -> dict[str, Any]:
    """buzón's listener and durable acceptance, no worker (bench/smtp_intake.py's server)."""
    with tempfile.TemporaryDirectory(prefix="buzon-wire-smtp-") as tmp:
        port = smtp_intake.free_port()
        cmd = [sys.executable, str(INTAKE), "--intake-only-server", str(port), "--data-dir", tmp]
        return _accept_only(cmd, port, mails, connections)


def _accept_only(cmd: list[str], port: int, mails: list[bytes], conns: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="buzon-wire-log-") as tmp:
        log = Path(tmp) / "server.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=out)
        try:
            smtp_intake.wait_listening(port, proc, timeout=60)
            load = loadavg()
            result = _accept(port, mails, conns)
        finally:
            stop(proc)
    return {
        "load": load,
        "mails": result.count,
        "wall_s": round(result.seconds, 2),
        "rate": result.rate,
        "p50_ms": round(result.pct(50), 1),
    }


def deployed(
    python: str, mails: list[bytes], connections: int, extra: str, timeout: float
) -> dict[str, Any]:
    """`buzon smtp` as deployed: accepted rate, and the rate until every mail is processed."""
    with tempfile.TemporaryDirectory(prefix="buzon-wire-smtp-") as tmp:
        with _buzon_smtp(python, Path(tmp), extra) as (proc, store, port):
            started = settle(proc.pid)
            load = loadavg()
            start = time.perf_counter()
            result = _accept(port, mails, connections)
            done = store.wait_processed(len(mails), proc, timeout)
            wall = time.perf_counter() - start
            cpu = cpu_seconds(proc.pid)
            counts = store.counts()
        if not done:
            raise RuntimeError(f"buzon smtp: not all processed within {timeout:.0f} s")
    return {
        "load": load,
        "mails": len(mails),
        "settled_s": started,
        "accept_rate": result.rate,
        "p50_ms": round(result.pct(50), 1),
        "wall_s": round(wall, 2),
        "rate": len(mails) / wall,
        "cpu_s": cpu,
        **counts,
    }


def settle(pid: int, timeout: float = 60.0) -> float:
    """Seconds until `pid`'s process tree is idle (under a tenth of a core over half a
    second): the listener greets before its worker processes have imported their code,
    and a burst measured then would time their start-up, not their processing."""
    start = time.monotonic()
    last = cpu_seconds(pid)
    while time.monotonic() - start < timeout:
        time.sleep(0.5)
        now = cpu_seconds(pid)
        if now - last < 0.05:
            break
        last = now
    return round(time.monotonic() - start, 1)


def peak_rss(python: str, raw: bytes, extra: str, timeout: float) -> dict[str, Any]:
    """`buzon smtp` (listener, worker and any child process): RSS when idle, then the
    peak after receiving, storing and processing `raw`."""
    with (
        tempfile.TemporaryDirectory(prefix="buzon-wire-mem-") as tmp,
        _buzon_smtp(python, Path(tmp), extra) as (proc, store, port),
    ):
        time.sleep(1.0)  # settled after start-up
        idle = rss_mb(proc.pid, "VmRSS")
        load = loadavg()
        with smtplib.SMTP("127.0.0.1", port, timeout=300) as client:
            client.sendmail("lucia.sanchez@example.es", [SUPPORT[0]], raw)
        done = store.wait_processed(1, proc, timeout)
        peak = rss_mb(proc.pid, "VmHWM")
        counts = store.counts()
    size = len(raw) / 2**20
    return {
        "load": load,
        "processed": done,
        "mail_mb": round(size, 1),
        "idle_mb": idle,
        "peak_mb": peak,
        "above_idle_x": round((peak - idle) / size, 2),
        **counts,
    }
