"""Start-up of `buzon smtp` on a fresh data dir: when each part is ready (issue 15).

From the process start: the supervisor's components started (import, settings, schema,
wiring done), the SMTP port accepting, the worker processes started (the main process's
log line once they are forked) and each ready (its first log line), the first mail
processed (sent as soon as the port accepts), and the CPU seconds of the whole process
tree by then (the figure to read on a loaded machine). The daemon's log
lines are stamped on arrival through a pipe, so no clock of the daemon is trusted.

    .venv/bin/python -m bench.serve_startup [--repeat 3] [--backend sqlite|postgresql|both]

Also prints `python -X importtime`'s total for `import daemon.wiring` and `daemon.config`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from bench.wire_common import (
    BUZON_ENV,
    PG_ADMIN_URL,
    SUPPORT,
    Store,
    buzon_cmd,
    buzon_toml,
    cpu_seconds,
    loadavg,
    pg_database,
    stop,
)

MAIL = (
    "From: Ana <ana@cliente.example>\r\nTo: {to}\r\nSubject: Arranque\r\n"
    "Message-ID: <startup-{n}@cliente.example>\r\nDate: {date}\r\n\r\nHola.\r\n"
)
# Log lines that mark a part ready (the daemon's own INFO messages).
MARKS = {
    "components": re.compile(r"started components="),
    "workers_started": re.compile(r"started \d+ ingest worker process"),
    "worker_ready": re.compile(r"ingest worker process ready"),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stamp_lines(pipe: Any, start: float, seen: dict[str, list[float]]) -> None:
    for raw in iter(pipe.readline, b""):
        line = raw.decode("utf-8", "replace")
        for name, pattern in MARKS.items():
            if pattern.search(line):
                seen.setdefault(name, []).append(time.monotonic() - start)


def _wait_port(port: int, proc: subprocess.Popen[bytes], start: float, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"buzón exited early with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return time.monotonic() - start
        except OSError:
            time.sleep(0.01)
    raise RuntimeError("the SMTP port never accepted")


def one_start(python: str, root: Path, db_url: str | None, processes: int) -> dict[str, Any]:
    port = free_port()
    config = buzon_toml(root, db_url, f"[ingest]\nprocesses = {processes}\n")
    env = {**os.environ, **BUZON_ENV, "BUZON_LOG__LEVEL": "INFO"}
    store = Store(db_url or f"sqlite:///{root / 'data' / 'buzon.db'}")
    seen: dict[str, list[float]] = {}
    start = time.monotonic()
    proc = subprocess.Popen(
        [*buzon_cmd(python, config, "smtp"), "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    reader = threading.Thread(target=_stamp_lines, args=(proc.stderr, start, seen), daemon=True)
    reader.start()
    try:
        listening = _wait_port(port, proc, start, 120)
        date = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
            client.sendmail("ana@cliente.example", [SUPPORT[0]],
                            MAIL.format(to=SUPPORT[1], n=start, date=date).encode())  # fmt: skip
        if not store.wait_processed(1, proc, 120):
            raise RuntimeError("the first mail was not processed in time")
        first = time.monotonic() - start
        cpu = cpu_seconds(proc.pid)  # the main process, fork server and workers so far
        deadline = time.monotonic() + 60
        while len(seen.get("worker_ready", [])) < processes and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop(proc)
        store.close()
        reader.join(5)
    ready = seen.get("worker_ready", [])
    return {
        "components": round(seen["components"][0], 2) if "components" in seen else None,
        "listening": round(listening, 2),
        "first_processed": round(first, 2),
        "workers_started": round(seen["workers_started"][0], 2)
        if "workers_started" in seen
        else None,
        "workers_ready": round(max(ready), 2) if len(ready) >= processes else None,
        "cpu_at_first_processed": cpu,
    }


def import_seconds(python: str, module: str) -> float:
    """`python -X importtime -c 'import MODULE'`: the module's cumulative microseconds."""
    done = subprocess.run([python, "-X", "importtime", "-c", f"import {module}"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    for line in done.stderr.splitlines():
        parts = [p.strip() for p in line.removeprefix("import time:").split("|")]
        if len(parts) == 3 and parts[2] == module:
            return round(int(parts[1]) / 1e6, 2)
    raise RuntimeError(f"{module} not in -X importtime output")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    args = parser.parse_args()
    python = sys.executable
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    report: dict[str, Any] = {"load_start": loadavg()}
    for module in ("daemon.config", "daemon.wiring"):
        report[f"import {module}, s"] = statistics.median(
            import_seconds(python, module) for _ in range(args.repeat)
        )
    for backend in backends:
        runs = []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory(prefix="buzon-startup-") as tmp:
                db = pg_database(PG_ADMIN_URL) if backend == "postgresql" else nullcontext(None)
                with db as url:
                    runs.append(one_start(python, Path(tmp), url, args.processes))
        report[backend] = {
            key: statistics.median(v for r in runs if (v := r[key]) is not None) for key in runs[0]
        } | {"runs": runs}
    report["load_end"] = loadavg()
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
