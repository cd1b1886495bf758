"""Wire speed (issue 15): buzón against django-helpdesk and bare servers, interleaved.

One command, from the top of a buzón checkout (its .venv made by deploy/bootstrap.sh):

    .venv/bin/python bench/wire_speed.py --setup-dh --markdown /tmp/wire.md

It works in WORK (`--work`, env WIRE_SPEED_WORK; default ../bench-wire beside the
checkout, outside it): the generated mails (made once, by the anchors' gen_messages.py),
django-helpdesk 2.6.1's virtualenv (made by `--setup-dh` when missing) and its project.
The anchors (gen_messages.py, dhproj/) come from `--anchors` (default ../shared/anchors).
`--quick` is a smoke run (150 mails, 1 repetition unless `--repetitions`); `--mails N`
takes the first N of each set (a busy machine: fewer mails, same ratios).

Inside every repetition, the order rotating from one to the next, on the same mails:
  imap    the imap1000 backlog in a private Dovecot: bare imapclient fetch; django-helpdesk
          `get_email`; `buzon imap` on SQLite and on PostgreSQL (a fresh database
          bench_<pid>_<n> on 127.0.0.1:5432, dropped after) until every mail is processed
  smtp    1,000 ~3 KB mails over 20 connections: bare aiosmtpd; buzón's acceptance alone;
          `buzon smtp` as deployed, until every mail is processed
  desk    the desk in process (bench/wire_desk.py): ms, SQL statements and commits per
          new-ticket mail and per reply; the single-core floor (parse + Core insert)
  memory  (once, after the repetitions) peak RSS of `buzon smtp` for a ~25 MB mail
It prints every measurement with the 1-minute load average, then a table of median
(range) and the per-repetition ratios against the aims; `--markdown FILE` writes it.
Only 127.0.0.1; only the processes it starts are stopped. `--extra-toml FILE` appends
settings to every buzón config (e.g. a worker count a later commit adds).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import wire_imap, wire_smtp  # noqa: E402
from bench.wire_common import BUZON_ENV, PG_ADMIN_URL, loadavg, machine, pg_database  # noqa: E402
from bench.wire_report import report  # noqa: E402

Record = dict[str, Any]
PARTS = ("imap", "smtp", "desk", "memory")


def options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    env = os.environ.get
    parser.add_argument("--work", default=env("WIRE_SPEED_WORK", str(ROOT.parent / "bench-wire")))
    parser.add_argument(
        "--anchors", default=env("WIRE_ANCHORS", str(ROOT.parent / "shared/anchors"))
    )
    parser.add_argument("--dh-venv", default=env("WIRE_DH_VENV"), help="default: WORK/dh-venv")
    parser.add_argument("--setup-dh", action="store_true", help="create the dh venv if missing")
    parser.add_argument("--pg-url", default=env("WIRE_PG_URL", PG_ADMIN_URL))
    parser.add_argument("--no-pg", action="store_true")
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--repetitions", type=int)
    parser.add_argument("--quick", action="store_true", help="150 mails: a smoke run")
    parser.add_argument("--mails", type=int, help="mails per run (default 1000, quick 150)")
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=900, help="seconds per measurement")
    parser.add_argument("--extra-toml", help="TOML appended to every buzón config")
    parser.add_argument("--markdown", help="write the summary table here")
    parser.add_argument("--records", help="write every measurement here (JSON lines)")
    parser.add_argument("--summarize", help="only print the table of a --records file")
    args = parser.parse_args()
    args.work = Path(args.work).resolve()
    args.anchors = Path(args.anchors).resolve()
    args.dh_venv = Path(args.dh_venv or args.work / "dh-venv")
    args.repetitions = args.repetitions or (1 if args.quick else 3)
    args.mails = args.mails or (150 if args.quick else 1000)
    args.parts = set(args.parts.split(","))
    args.extra = Path(args.extra_toml).read_text() if args.extra_toml else ""
    return args


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.python = sys.executable  # buzón's interpreter: the one running this script
        self.msgs = args.work / "msgs"
        self.records: list[Record] = []

    # --- recording -------------------------------------------------------------------

    def measure(self, rep: int, part: str, variant: str, step: Callable[[], Record]) -> None:
        """One measurement; a failure is recorded and the run goes on."""
        try:
            record = {"rep": rep, "part": part, "variant": variant, **step()}
        except Exception as exc:  # noqa: BLE001 - reported in the summary, not fatal
            record = {
                "rep": rep,
                "part": part,
                "variant": variant,
                "load": loadavg(),
                "error": f"{type(exc).__name__}: {exc}"[:600],
            }
        self.records.append(record)
        print(json.dumps(record, default=str)[:400], flush=True)
        if self.args.records:
            with open(self.args.records, "a") as out:
                out.write(json.dumps(record, default=str) + "\n")

    # --- inputs ----------------------------------------------------------------------

    def prepare(self) -> None:
        if not (self.msgs / "imap1000").is_dir():
            gen = [
                sys.executable,
                str(self.args.anchors / "gen_messages.py"),
                "--out",
                str(self.msgs),
            ]
            subprocess.run(gen, check=True, stdout=subprocess.DEVNULL, timeout=900)
        if self.args.setup_dh and "imap" in self.args.parts:
            wire_imap.DjangoHelpdesk.create_venv(self.args.dh_venv)
        files = sorted((self.msgs / "imap1000").glob("*.eml"))[: self.args.mails]
        self.imap_raws = [f.read_bytes() for f in files]
        self.smtp_raws = wire_smtp.smtp_mails(self.args.anchors, self.msgs, self.args.mails)

    # --- the parts -------------------------------------------------------------------

    def imap_steps(self, rep: int, server: Any, dh: Any) -> list[Callable[[], None]]:
        a, raws = self.args, self.imap_raws

        def buzon(db: str) -> Record:
            if db == "sqlite":
                return wire_imap.buzon_imap(self.python, server, raws, None, a.extra, a.timeout)
            with pg_database(a.pg_url) as url:
                return wire_imap.buzon_imap(self.python, server, raws, url, a.extra, a.timeout)

        steps = [
            lambda: self.measure(
                rep, "imap", "bare_fetch", lambda: wire_imap.bare_fetch(server, raws)
            )
        ]
        if dh is not None:
            steps.append(
                lambda: self.measure(rep, "imap", "helpdesk", lambda: dh.get_email(raws, a.timeout))
            )
        steps.append(lambda: self.measure(rep, "imap", "buzon_sqlite", lambda: buzon("sqlite")))
        if not a.no_pg:
            steps.append(lambda: self.measure(rep, "imap", "buzon_pg", lambda: buzon("pg")))
        return steps

    def smtp_steps(self, rep: int) -> list[Callable[[], None]]:
        a, mails, conns = self.args, self.smtp_raws, self.args.connections
        return [
            lambda: self.measure(rep, "smtp", "bare", lambda: wire_smtp.bare(mails, conns)),
            lambda: self.measure(
                rep, "smtp", "acceptance", lambda: wire_smtp.acceptance_only(mails, conns)
            ),
            lambda: self.measure(
                rep,
                "smtp",
                "deployed",
                lambda: wire_smtp.deployed(self.python, mails, conns, a.extra, a.timeout),
            ),
        ]

    def desk_steps(self, rep: int) -> list[Callable[[], None]]:
        def desk(*extra: str) -> Record:
            cmd = [
                self.python,
                str(ROOT / "bench" / "wire_desk.py"),
                "--msgs",
                str(self.msgs),
                "--count",
                str(self.args.mails),
                *extra,
            ]
            if self.args.extra_toml:
                cmd += ["--extra-toml", self.args.extra_toml]
            load = loadavg()
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=self.args.timeout)
            if done.returncode != 0:
                raise RuntimeError(done.stderr[-1500:])
            return {"load": load, **json.loads(done.stdout.strip().splitlines()[-1])}

        return [
            lambda: self.measure(rep, "desk", "desk_sqlite", desk),
            lambda: self.measure(rep, "desk", "floor_sqlite", lambda: desk("--floor")),
        ]

    def run(self) -> None:
        a = self.args
        server = dh = None
        if "imap" in a.parts:
            server = wire_imap.Dovecot()
            server.start()
        try:
            if server is not None and (a.dh_venv / "bin" / "python").exists():
                dh = wire_imap.DjangoHelpdesk(a.dh_venv, a.anchors / "dhproj", a.work, server)
            elif server is not None:
                print(f"django-helpdesk skipped: no {a.dh_venv} (run with --setup-dh)")
            for rep in range(a.repetitions):
                steps: list[Callable[[], None]] = []
                if server is not None:
                    steps += self.imap_steps(rep, server, dh)
                if "smtp" in a.parts:
                    steps += self.smtp_steps(rep)
                if "desk" in a.parts:
                    steps += self.desk_steps(rep)
                turn = rep * 3 % max(len(steps), 1)  # a different order in each repetition
                for step in steps[turn:] + steps[:turn]:
                    step()
            if "memory" in a.parts:
                big = wire_smtp.big_mail(a.anchors, self.msgs)
                self.measure(
                    -1,
                    "memory",
                    "smtp_25mb",
                    lambda: wire_smtp.peak_rss(self.python, big, a.extra, a.timeout),
                )
        finally:
            if server is not None:
                server.close()


def main() -> None:
    args = options()
    if args.summarize:  # e.g. the repetitions that finished before an interrupted run
        records = [json.loads(line) for line in Path(args.summarize).read_text().splitlines()]
        print(report(records, f"from {args.summarize}"))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    os.chdir(ROOT)  # `python -m daemon` runs the code of this checkout
    os.environ.update(BUZON_ENV)
    bench = Bench(args)
    bench.prepare()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    header = (
        f"{started}, commit {commit}, {machine()}, {args.repetitions} repetition(s), "
        f"{args.mails} mails; load average at start {loadavg()}"
    )
    print(header, flush=True)
    bench.run()
    table = report(bench.records, header + f", at end {loadavg()}")
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")


if __name__ == "__main__":
    main()
