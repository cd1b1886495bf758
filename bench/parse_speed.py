"""Parse cost per mail: buzón's `parsers.parse` against mail-parser's `parse_from_bytes` on
the same mails, in the same run, interleaved set by set (CPU time, a loaded machine's
least disturbed figure). Only the ratio means anything across runs.

    .venv/bin/python bench/parse_speed.py                     # the wire bench's mails
    .venv/bin/python bench/parse_speed.py --set corpus=/work/shared/corpus --repeat 5
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import mailparser  # noqa: E402

from parsers import parse  # noqa: E402

DEFAULT_SETS = {
    "imap1000 (generated, Spanish)": Path("/work/bench-wire/msgs/imap1000"),
    "smtp3k_1000 (3 KB)": Path("/work/bench-wire/msgs/smtp3k_1000"),
}


def mails(folder: Path) -> list[bytes]:
    return [path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()]


def ms_per_mail(function: Callable[[bytes], object], data: list[bytes]) -> float:
    started = time.process_time()
    for raw in data:
        function(raw)
    return (time.process_time() - started) * 1000 / len(data)


def mail_parser(raw: bytes) -> object:
    try:
        return mailparser.parse_from_bytes(raw)
    except Exception as exc:  # it gives up on some real-world mails: the time still counts
        return exc


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--set", action="append", default=[], metavar="NAME=FOLDER")
    options.add_argument("--repeat", type=int, default=5, help="passes; the median is shown")
    args = options.parse_args()
    logging.disable(logging.CRITICAL)  # mail-parser logs every part type it skips
    sets = dict(item.split("=", 1) for item in args.set) if args.set else DEFAULT_SETS
    print(f"load average at start {os.getloadavg()[0]:.2f}, {args.repeat} passes, CPU ms/mail")
    print("| mails | n | buzón `parse` | mail-parser | buzón / mail-parser |")
    print("|---|---:|---:|---:|---:|")
    for name, folder in sets.items():
        data = mails(Path(folder))
        ours_runs, theirs_runs = [], []
        for raw in data[:20]:  # warm up: imports and compiled patterns
            parse(raw)
            mail_parser(raw)
        for _ in range(args.repeat):
            ours_runs.append(ms_per_mail(parse, data))
            theirs_runs.append(ms_per_mail(mail_parser, data))
        ratios = [ours / theirs for ours, theirs in zip(ours_runs, theirs_runs, strict=True)]
        ours, theirs = statistics.median(ours_runs), statistics.median(theirs_runs)
        ratio = statistics.median(ratios)
        print(f"| {name} | {len(data)} | {ours:.2f} | {theirs:.2f} | {ratio:.2f} |")
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
