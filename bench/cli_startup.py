"""CLI start-up: the wall time of `buzon tickets list` (and `buzon --version`) on a small
SQLite database whose schema is current, with hyperfine when installed (Debian package
`hyperfine`), else N timed runs; then the slowest imports (`python -X importtime`).

    .venv/bin/python bench/cli_startup.py              # ~30 s
    .venv/bin/python bench/cli_startup.py --runs 20
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.smtp_intake import machine  # noqa: E402
from tests.mailbuilder import mail  # noqa: E402

COMMANDS = {"tickets list": ["tickets", "list"], "--version": ["--version"]}


def environment(tmp: Path) -> dict[str, str]:
    # Without PYTHONDONTWRITEBYTECODE: an installed buzón runs from bytecode, and with it
    # set (as in some shells here) every run compiles buzón's modules from source again.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("BUZON_") and k != "PYTHONDONTWRITEBYTECODE"
    }
    env.update(
        BUZON_DATA_DIR=str(tmp / "data"),
        BUZON_SECRET_KEY="bench-secret-0123456789",
        BUZON_SUPPORT_ADDRESSES='["soporte@soporte.example"]',
    )
    return env


def buzon(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "daemon", *args]


def with_hyperfine(
    args: list[str], env: dict[str, str], runs: int, tmp: Path
) -> tuple[list[float], float]:
    """Wall times, and the mean CPU time (user + system): the figure a loaded machine
    disturbs least."""
    out = tmp / "hyperfine.json"
    command = " ".join(buzon(args))
    subprocess.run(
        ["hyperfine", "-N", "--warmup", "3", "--runs", str(runs), "--export-json", str(out)]
        + ["--style", "none", command],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    result = json.loads(out.read_text())["results"][0]
    return list(result["times"]), result["user"] + result["system"]


def timed(args: list[str], env: dict[str, str], runs: int) -> tuple[list[float], float]:
    times, cpu = [], []
    for _ in range(runs + 3):
        start, before = time.perf_counter(), os.times()
        subprocess.run(buzon(args), cwd=ROOT, env=env, check=True, capture_output=True)
        after = os.times()
        times.append(time.perf_counter() - start)
        cpu.append(after.children_user - before.children_user + after.children_system)
        cpu[-1] -= before.children_system
    return times[3:], statistics.mean(cpu[3:])  # the first runs warm the page cache


def slowest_imports(args: list[str], env: dict[str, str], top: int = 8) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "daemon", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    rows = []
    for line in result.stderr.splitlines():
        if line.startswith("import time:") and "|" in line and "cumulative" not in line:
            _, cumulative, name = line.split("|")
            if not name.startswith("    "):  # a top-level import of `python -m daemon`
                rows.append((int(cumulative), name.strip()))
    return [f"{name} {micro / 1000:.0f} ms" for micro, name in sorted(rows, reverse=True)[:top]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="buzon-startup-") as name:
        tmp = Path(name)
        env = environment(tmp)
        subprocess.run(buzon(["db", "upgrade"]), cwd=ROOT, env=env, check=True)
        for n in range(20):
            raw = mail(f"Cliente {n} <c{n}@cliente.example>", f"Consulta {n}", "Buenos días.")
            subprocess.run(buzon(["ingest"]), input=raw, cwd=ROOT, env=env, check=True)
        print(f"{machine()}\nload {os.getloadavg()[0]:.2f}; 20 tickets, SQLite")
        tool = "hyperfine" if shutil.which("hyperfine") else "perf_counter"
        for label, command in COMMANDS.items():
            if tool == "hyperfine":
                times, cpu = with_hyperfine(command, env, args.runs, tmp)
            else:
                times, cpu = timed(command, env, args.runs)
            print(
                f"  buzon {label:14} wall median {statistics.median(times) * 1000:5.0f} ms "
                f"(min {min(times) * 1000:5.0f}, max {max(times) * 1000:5.0f}), "
                f"CPU {cpu * 1000:5.0f} ms ({len(times)} runs, {tool})"
            )
        print(
            "  slowest imports of `tickets list`: "
            + ", ".join(slowest_imports(["tickets", "list"], env))
        )


if __name__ == "__main__":
    main()
