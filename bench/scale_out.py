"""Scale-out benchmark: 1 vs 2 `buzon smtp` instances on one PostgreSQL database.

For each instance count the same load — N new-ticket mails (a fifth of them replies to
earlier ones) over C concurrent SMTP connections spread round-robin over the listeners —
goes to real `buzon smtp` processes sharing a fresh PostgreSQL schema. It prints:

- accepted msg/s (first MAIL FROM → last 250) and processed msg/s (→ nothing pending);
- where the time went: CPU seconds of the buzón processes, of PostgreSQL's processes and
  of this client, against the machine's cores; and how often a sampled PostgreSQL backend
  was waiting on a lock (pg_stat_activity, every 100 ms);
- the ratio 2 instances / 1 instance.

Then (--profile) one instance's processing in-process under cProfile: the same mails
accepted first, then drained by one ingest worker, with the functions that take the CPU.

    .venv/bin/python bench/scale_out.py                       # 2,000 mails, 8 connections
    .venv/bin/python bench/scale_out.py --count 5000 --connections 12 --profile
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.smtp_intake import machine  # noqa: E402
from tests.fixtures.scale_out import Database, Instance, Senders, instances, mid  # noqa: E402
from tests.mailbuilder import mail  # noqa: E402

PG_URL = os.environ.get("BUZON_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
TICKS = os.sysconf("SC_CLK_TCK")


@contextmanager
def fresh_schema() -> Iterator[str]:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def build_mails(count: int) -> list[bytes]:
    """New requests, and every fifth mail a reply (In-Reply-To) to one sent 50 earlier."""
    mails: list[bytes] = []
    for n in range(count):
        if n % 5 == 4 and n >= 50:
            root = mails[n - 50]
            raw = mail(
                f"c{n - 50}@clinica.example",
                "Re: consulta",
                f"Sigo {n}",
                in_reply_to=f"<{mid(root)}>",
            )
        else:
            raw = mail(f"Cliente {n} <c{n}@clinica.example>", f"Consulta {n}", f"Texto {n} " * 30)
        mails.append(raw)
    return mails


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (and its reaped children), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / TICKS


def postgres_pids() -> list[int]:
    """The PostgreSQL server's processes on this machine (to read their CPU, nothing else)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


class LockSampler:
    """Samples pg_stat_activity of our database: active backends, and those waiting on a lock."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url)
        self.active = 0
        self.locked = 0
        self.samples = 0
        self.halt = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LockSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.halt.set()
        self.thread.join(5)
        self.engine.dispose()

    def _run(self) -> None:
        sql = text(
            "SELECT count(*) FILTER (WHERE state = 'active'),"
            " count(*) FILTER (WHERE state = 'active' AND wait_event_type = 'Lock')"
            " FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        with self.engine.connect() as conn:
            while not self.halt.wait(0.1):
                active, locked = conn.execute(sql).one()
                conn.rollback()
                self.active += active
                self.locked += locked
                self.samples += 1


@dataclass
class Run:
    instances: int
    count: int
    accepted_s: float
    processed_s: float
    cpu_buzon: float
    cpu_postgres: float
    cpu_client: float
    active_avg: float
    locked_avg: float

    @property
    def accept_rate(self) -> float:
        return self.count / self.accepted_s

    @property
    def process_rate(self) -> float:
        return self.count / self.processed_s


def run(count_instances: int, mails: list[bytes], connections: int) -> Run:
    with fresh_schema() as url, tempfile.TemporaryDirectory(prefix="buzon-scale-") as tmp:
        db = Database(url)
        # Senders reconnect when a listener closes a session at max_messages_per_connection.
        with instances(Path(tmp), url, count_instances) as group:
            pids = [pid(one) for one in group] + postgres_pids()
            before = [cpu_seconds(p) for p in pids]
            client_before = time.process_time()
            with LockSampler(url) as sampler:
                started = time.perf_counter()
                Senders([one.port for one in group], mails, threads=connections).run()
                accepted = time.perf_counter() - started
                db.wait_processed(3600)
                processed = time.perf_counter() - started
            after = [cpu_seconds(p) for p in pids]
            used = [a - b for a, b in zip(after, before, strict=True)]
            n = len(group)
            result = Run(
                count_instances,
                len(mails),
                accepted,
                processed,
                sum(used[:n]),
                sum(used[n:]),
                time.process_time() - client_before,
                sampler.active / max(sampler.samples, 1),
                sampler.locked / max(sampler.samples, 1),
            )
        processed_rows = db.one("SELECT count(*) FROM raw_messages WHERE state = 'processed'")
        assert processed_rows == len(mails), f"{processed_rows} of {len(mails)} processed"
        db.engine.dispose()
        return result


def pid(one: Instance) -> int:
    assert one.proc is not None
    return one.proc.pid


def profile_one(mails: list[bytes], top: int) -> str:
    """Accept the mails, then drain them with one in-process worker under cProfile."""
    from daemon.config import load_settings
    from daemon.wiring import App
    from tickets.inbox import accept

    with fresh_schema() as url, tempfile.TemporaryDirectory(prefix="buzon-prof-") as tmp:
        settings = load_settings(
            None,
            data_dir=Path(tmp),
            database_url=url,
            secret_key="bench-secret-0123456789",
            support_addresses=["soporte@soporte.example"],
        )
        app = App(settings)
        app.prepare()
        for raw in mails:
            accept(app.sessions, raw, "smtp", {"mail_from": "x@clinica.example"})
        worker = app.ingest_worker()
        profiler = cProfile.Profile()
        wall, cpu = time.perf_counter(), time.process_time()
        profiler.enable()
        worker.drain()
        profiler.disable()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        app.engine.dispose()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(top)
    head = (
        f"one worker, {len(mails)} mails: {len(mails) / wall:.1f} msg/s, "
        f"{wall / len(mails) * 1000:.1f} ms/mail wall, {cpu / len(mails) * 1000:.1f} ms CPU "
        f"(the rest, {(wall - cpu) / len(mails) * 1000:.1f} ms, waits on PostgreSQL)"
    )
    return head + "\n" + out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--instances", default="1,2", help="instance counts to compare")
    parser.add_argument("--profile", type=int, default=0, help="also profile N mails, 1 worker")
    args = parser.parse_args()

    print(f"machine: {machine()}")
    mails = build_mails(args.count)
    results = []
    for n in (int(x) for x in args.instances.split(",")):
        result = run(n, mails, args.connections)
        results.append(result)
        print(
            f"{n} instance(s), {result.count} mails, {args.connections} connections: "
            f"accepted {result.accept_rate:.1f} msg/s ({result.accepted_s:.1f} s), "
            f"processed {result.process_rate:.1f} msg/s ({result.processed_s:.1f} s); "
            f"CPU s: buzón {result.cpu_buzon:.0f}, postgres {result.cpu_postgres:.0f}, "
            f"client {result.cpu_client:.0f} of {os.cpu_count() * result.processed_s:.0f} "
            f"available; backends active {result.active_avg:.2f}, "
            f"waiting on a lock {result.locked_avg:.2f} (avg of samples)",
            flush=True,
        )
    if len(results) >= 2:
        first, last = results[0], results[-1]
        print(
            f"ratio {last.instances}/{first.instances} instances: accepted "
            f"{last.accept_rate / first.accept_rate:.2f}x, processed "
            f"{last.process_rate / first.process_rate:.2f}x"
        )
    if args.profile:
        print(profile_one(build_mails(args.profile), top=35))


if __name__ == "__main__":
    main()
