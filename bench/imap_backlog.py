"""IMAP poller benchmark against a private Dovecot (the test fixture's), on SQLite.

1. Backlog: N mails in INBOX. Baseline = a bare imapclient session fetching every body
   (BODY.PEEK[] in batches of 50, nothing stored). buzón = the poller from login to the
   last ticket committed (store raw, parse, thread, ticket, acknowledgement in the
   outbox, \\Seen on the server). Prints both rates and their ratio.
2. IDLE latency: the poller idles; a mail is APPENDed; the clock stops when its ticket is
   committed. p50/p95 over the trials.

    .venv/bin/python bench/imap_backlog.py [--messages 1000] [--trials 50]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from imapclient import IMAPClient  # noqa: E402

from daemon.config import load_settings  # noqa: E402
from daemon.intake.imap_poller import ImapPoller  # noqa: E402
from daemon.wiring import App  # noqa: E402
from tests.fixtures.dovecot import Dovecot, mailbox_config, wait_until  # noqa: E402
from tests.mailbuilder import mail  # noqa: E402
from tickets.ingest import process  # noqa: E402

BODY = (
    "Buenos días,\n\nDesde esta mañana la agenda de la clínica no carga para los "
    "pacientes de la sede norte. Ya probamos cerrar sesión y borrar la caché.\n\n"
    "Quedo atenta,\nAna Pérez\nRecepción — Clínica Dental Sonrisa\nTel. 55 1234 5678\n"
) * 3


def sample(n: int) -> bytes:
    return mail(f"Paciente {n} <paciente{n}@clinica.example>", f"No carga la agenda {n}", BODY)


def make_app(root: Path, server: Dovecot) -> App:
    settings = load_settings(
        None,
        data_dir=root / "data",
        support_addresses=["soporte@soporte.example"],
        secret_key="bench-secret-0123456789",
        log={"level": "WARNING"},
        imap={"mailboxes": [mailbox_config(server, poll_interval=60, batch_size=50)]},
    )
    app = App(settings)
    app.prepare()
    return app


def bare_fetch_rate(server: Dovecot) -> float:
    started = time.perf_counter()
    fetched = 0
    with IMAPClient(server.host, server.port, ssl=False) as imap:
        imap.login(server.user, server.password)
        imap.select_folder("INBOX", readonly=True)
        uids = imap.search("ALL")
        for start in range(0, len(uids), 50):
            for data in imap.fetch(uids[start : start + 50], ["BODY.PEEK[]"]).values():
                fetched += len(data[b"BODY[]"]) > 0
    return fetched / (time.perf_counter() - started)


def bare_idle_latencies(server: Dovecot, trials: int) -> list[float]:
    """APPEND -> EXISTS seen by a bare IDLE client: the server's own notification delay."""
    latencies = []
    with server.client() as watcher, server.client() as writer:
        watcher.select_folder("INBOX", readonly=True)
        for n in range(trials):
            watcher.idle()
            started = time.perf_counter()
            writer.append("INBOX", sample(200_000 + n))
            while not any(r[1:2] == (b"EXISTS",) for r in watcher.idle_check(timeout=5)):
                pass
            latencies.append(time.perf_counter() - started)
            watcher.idle_done()
    return latencies


def handled(poller: ImapPoller) -> int:
    return sum(v for k, v in poller.counts.items() if k != "oversize")


def backlog_rate(poller: ImapPoller, messages: int) -> float:
    """From start (login included) to the last message handled; the poller then stops."""
    halt = threading.Event()
    thread = threading.Thread(target=poller.run_blocking, args=(halt,))
    started = time.perf_counter()
    thread.start()
    wait_until(lambda: handled(poller) >= messages, 900, "the backlog")
    rate = messages / (time.perf_counter() - started)
    halt.set()
    thread.join()
    return rate


def variant(app: App, kind: str) -> ImapPoller:
    """full: as deployed; ingest: tickets without SLA clocks and acknowledgements;
    store: the poller's own work only (fetch, commit raw bytes, \\Seen), rows left pending."""
    poller = app.imap_poller(app.settings.imap.mailboxes[0])
    if kind == "ingest":  # the domain alone: no SLA refresh, no outbox rows
        poller.ingest = lambda raw_id: process(app.sessions, app.policy, raw_id).state
    elif kind == "store":
        poller.ingest = lambda raw_id: "processed"
    return poller


def idle_latencies(poller: ImapPoller, server: Dovecot, trials: int) -> list[float]:
    latencies = []
    with IMAPClient(server.host, server.port, ssl=False) as imap:
        imap.login(server.user, server.password)
        for n in range(trials):
            before = handled(poller)
            raw = sample(100_000 + n)
            started = time.perf_counter()
            imap.append("INBOX", raw)
            while handled(poller) == before:
                time.sleep(0.0005)
            latencies.append(time.perf_counter() - started)
            time.sleep(0.05)  # let the poller go back to IDLE, as between real mails
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--trials", type=int, default=50)
    args = parser.parse_args()
    server = Dovecot()
    rates: dict[str, float] = {}
    try:
        server.start()
        server.append_many(sample(n) for n in range(args.messages))
        bare = bare_fetch_rate(server)
        bare_idle = bare_idle_latencies(server, min(args.trials, 20))
        # Each variant starts from an empty database, so it fetches the whole folder again.
        for kind in ("store", "ingest", "full"):
            with tempfile.TemporaryDirectory() as root:
                app = make_app(Path(root), server)
                rates[kind] = backlog_rate(variant(app, kind), args.messages)
                if kind == "full":
                    latencies = idle_run(app, server, args.trials)
                app.engine.dispose()
    finally:
        server.close()
    report(args, bare, rates, latencies, bare_idle)


def idle_run(app: App, server: Dovecot, trials: int) -> list[float]:
    poller = variant(app, "full")
    halt = threading.Event()
    thread = threading.Thread(target=poller.run_blocking, args=(halt,))
    thread.start()
    try:
        wait_until(poller.working.is_set, 30, "the poller to idle")
        return idle_latencies(poller, server, trials)
    finally:
        halt.set()
        thread.join()


def report(
    args: argparse.Namespace,
    bare: float,
    rates: dict[str, float],
    lat: list[float],
    bare_idle: list[float],
) -> None:
    labels = {
        "store": "poller only (fetch, store raw, \\Seen)",
        "ingest": "+ parse, thread, ticket",
        "full": "+ SLA clocks, acknowledgement (as run)",
    }
    print(f"backlog of {args.messages} mails (~{len(sample(0))} B), SQLite")
    print(f"  {'bare imapclient fetch':40} {bare:8.1f} msg/s")
    for kind, rate in rates.items():
        print(f"  {labels[kind]:40} {rate:8.1f} msg/s  {rate / bare:6.1%} of bare fetch")
    p50 = statistics.median(lat)
    p95 = statistics.quantiles(lat, n=20)[-1]
    print(f"IDLE latency, APPEND -> ticket committed, {args.trials} trials (full)")
    print(f"  p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, max {max(lat) * 1000:.0f} ms")
    print(
        f"  baseline: bare IDLE client, APPEND -> EXISTS, p50 "
        f"{statistics.median(bare_idle) * 1000:.0f} ms (the server's notification delay)"
    )


if __name__ == "__main__":
    main()
