"""Peak memory for one ~25 MB mail (an 18 MB PDF, base64) in the real processes.

  ingest  `buzon ingest FILE` for a 300-byte mail, then for the big one, each a fresh
          process on a database already migrated: peak RSS from wait4(2) (ru_maxrss);
          idle = the small mail's peak.
  smtp    `buzon smtp` (listener + ingest workers): VmHWM (/proc/PID/status) of every
          process of the tree after two small mails went the whole way (idle, warmed
          up), then after the big mail was accepted over SMTP and processed into a ticket.

It prints idle, peak, peak above idle and that as a multiple of the mail's size (the
aim: under 4x, i.e. under ~100 MB above idle for 25 MB).

    .venv/bin/python bench/big_mail_memory.py            # both, ~1 minute
    .venv/bin/python bench/big_mail_memory.py --only ingest
"""

from __future__ import annotations

import argparse
import os
import smtplib
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.smtp_intake import free_port, machine, stop, wait_listening  # noqa: E402
from tests.mailbuilder import big_mail, mail  # noqa: E402

SUPPORT = "soporte@soporte.example"
MB = 2**20


def write_config(tmp: Path) -> Path:
    config = tmp / "buzon.toml"
    (tmp / "data").mkdir()  # one-shot commands want the service's data dir to exist
    config.write_text(
        f'data_dir = "{tmp}/data"\ndatabase_url = "sqlite:///{tmp}/buzon.db"\n'
        f'support_addresses = ["{SUPPORT}"]\nsecret_key = "bench-secret-0123456789"\n'
        f"[smtp]\nmax_message_size = {40 * MB}\n"
    )
    return config


# `buzon ingest` as its console script runs it, reporting its VmHWM on the way out.
# (wait4's ru_maxrss would not do: Linux carries the forking parent's RSS across exec.)
_INGEST = """
import atexit, sys
from pathlib import Path

def report():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            print("VmHWM", int(line.split()[1]) * 1024, file=sys.stderr)

atexit.register(report)
sys.argv = ["buzon", *sys.argv[1:]]
from daemon.cli import entry
entry()
"""


def ingest_peak(config: Path, path: Path) -> int:
    """VmHWM (bytes) of one `buzon ingest` process."""
    cmd = [sys.executable, "-c", _INGEST, "ingest", "--config", str(config), str(path)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"buzon ingest exited {done.returncode}")
    return int(done.stderr.split("VmHWM", 1)[1].split()[0])


def tree(pid: int) -> list[int]:
    """`pid` and its descendants."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(parents.get(current, []))
    return found


def status(pid: int) -> dict[str, int]:
    """VmHWM and VmRSS of a live process, bytes."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            values[key] = int(rest.split()[0]) * 1024
    return values


def send(port: int, raw: bytes, message_id: str | None = None) -> None:
    if message_id is not None:  # distinct warm-up mails: dedupe would skip a repeat
        raw = raw.replace(b"Message-ID: <", f"Message-ID: {message_id[:-1]}.".encode(), 1)
    with smtplib.SMTP("127.0.0.1", port, timeout=300) as client:
        client.sendmail("lucia.sanchez@example.es", [SUPPORT], raw)


def wait_processed(
    db: Path, proc: subprocess.Popen[bytes], done: int = 1, timeout: float = 300
) -> None:
    deadline = time.monotonic() + timeout
    query = "SELECT count(*) FROM raw_messages WHERE state NOT IN ('pending', 'processing')"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"buzon smtp exited {proc.returncode}")
        with sqlite3.connect(db) as conn:
            if conn.execute(query).fetchone()[0] >= done:
                return
        time.sleep(0.2)
    raise RuntimeError("the big mail was not processed in time")


def report(label: str, idle: int, peak: int, size: int) -> None:
    above = peak - idle
    print(
        f"  {label:28} idle {idle / MB:6.1f} MB  peak {peak / MB:6.1f} MB  "
        f"above idle {above / MB:6.1f} MB = {above / size:4.2f}x the mail"
    )


def bench_ingest(tmp: Path, small: Path, big: Path) -> None:
    config = write_config(tmp / "ingest")
    ingest_peak(config, small)  # creates the schema: Alembic's peak is not the idle process
    idle = ingest_peak(config, small)
    peak = ingest_peak(config, big)
    report("buzon ingest", idle, peak, big.stat().st_size)


def bench_smtp(tmp: Path, small: Path, big: Path) -> None:
    config = write_config(tmp / "smtp")
    port = free_port()
    cmd = [sys.executable, "-m", "daemon", "smtp", "--config", str(config)]
    cmd += ["--listen", f"127.0.0.1:{port}"]
    with (tmp / "smtp.log").open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=log)
    db = tmp / "smtp" / "buzon.db"
    try:
        wait_listening(port, proc)
        # Idle = warmed up: a small mail through the whole path first (every process has
        # imported what it uses), as `buzon ingest`'s idle is a small mail's peak.
        for worker in range(2):  # each worker process takes one (wakes go to both)
            send(port, small.read_bytes(), f"<warm-{worker}@example.es>")
            wait_processed(db, proc, done=worker + 1)
        before = {pid: status(pid) for pid in tree(proc.pid)}
        send(port, big.read_bytes())
        wait_processed(db, proc, done=3)
        after = {pid: status(pid) for pid in tree(proc.pid)}
    finally:
        stop(proc)
    for pid, values in after.items():
        idle = before.get(pid, {}).get("VmHWM", 0)
        report(f"buzon smtp (pid {pid})", idle, values["VmHWM"], big.stat().st_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("ingest", "smtp"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="buzon-mem-") as name:
        tmp = Path(name)
        (tmp / "ingest").mkdir()
        (tmp / "smtp").mkdir()
        big, small = tmp / "big.eml", tmp / "small.eml"
        big.write_bytes(big_mail())
        small.write_bytes(mail("Ana <ana@cliente.example>", "Consulta", "Buenos días."))
        print(f"{machine()}\nload {os.getloadavg()[0]:.2f}; mail {big.stat().st_size:,} bytes")
        if args.only in (None, "ingest"):
            bench_ingest(tmp, small, big)
        if args.only in (None, "smtp"):
            bench_smtp(tmp, small, big)


if __name__ == "__main__":
    main()
