"""Leases (tickets/leases.py) on SQLite and PostgreSQL, and two pollers on one mailbox."""

from __future__ import annotations

import contextlib
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from daemon.wiring import App
from tests.fixtures.dovecot import Dovecot, mailbox_config, running, wait_until
from tests.helpers import count, make_app
from tests.mailbuilder import mail
from tickets import leases
from tickets.models import RawMessage, Ticket, utcnow


def test_a_lease_has_one_holder_until_it_lapses_or_is_released(app: App) -> None:
    now = utcnow()
    assert leases.acquire(app.sessions, "imap:x", "a", 30, now)
    assert leases.acquire(app.sessions, "imap:x", "a", 30, now)  # renewal
    assert not leases.acquire(app.sessions, "imap:x", "b", 30, now)
    assert leases.holder_of(app.sessions, "imap:x", now)[0] == "a"  # type: ignore[index]
    later = now + timedelta(seconds=31)  # a dies and stops renewing
    assert leases.holder_of(app.sessions, "imap:x", later) is None
    assert leases.acquire(app.sessions, "imap:x", "b", 30, later)
    assert not leases.acquire(app.sessions, "imap:x", "a", 30, later)
    leases.release(app.sessions, "imap:x", "a")  # not a's any more: no effect
    assert not leases.acquire(app.sessions, "imap:x", "a", 30, later)
    leases.release(app.sessions, "imap:x", "b")
    assert leases.acquire(app.sessions, "imap:x", "a", 30, later)


@pytest.mark.parametrize("lapsed", [False, True], ids=["new", "lapsed"])
def test_contenders_racing_for_a_lease_get_exactly_one_winner(app: App, lapsed: bool) -> None:
    now = utcnow()
    if lapsed:
        leases.acquire(app.sessions, "imap:race", "dead", 1, now - timedelta(seconds=60))
    contenders = 8
    barrier = threading.Barrier(contenders)
    wins: list[str] = []

    def contend(name: str) -> None:
        barrier.wait()
        if leases.acquire(app.sessions, "imap:race", name, 30, now):
            wins.append(name)

    threads = [threading.Thread(target=contend, args=(f"c{i}",)) for i in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(wins) == 1
    assert leases.holder_of(app.sessions, "imap:race", now)[0] == wins[0]  # type: ignore[index]


# --- two pollers on one mailbox -----------------------------------------------------------


def instance(tmp_path: Path, server: Dovecot, name: str, db_url: str) -> App:
    return make_app(
        tmp_path / name,
        db_url,
        support_addresses=["soporte@soporte.example"],
        instance_name=name,
        imap={
            "lease_seconds": 2,
            "reconnect_min_seconds": 0.05,
            "reconnect_max_seconds": 0.5,
            "mailboxes": [mailbox_config(server)],
        },
    )


@pytest.mark.dovecot
def test_two_pollers_one_works_the_other_takes_over_when_it_stops(
    tmp_path: Path, dovecot: Dovecot
) -> None:
    db_url = f"sqlite:///{tmp_path / 'shared.db'}"
    first, second = (instance(tmp_path, dovecot, n, db_url) for n in ("uno", "dos"))
    a = first.imap_poller(first.settings.imap.mailboxes[0])
    b = second.imap_poller(second.settings.imap.mailboxes[0])
    dovecot.append_many(mail(f"c{n}@clinica.example", f"Consulta {n}", "hola") for n in range(30))
    with contextlib.ExitStack() as first_running:
        first_running.enter_context(running(a))
        wait_until(a.working.is_set, 10, "the first poller to work")
        with running(b):
            wait_until(lambda: count(first, Ticket) == 30, 30, "30 tickets")
            assert not b.working.is_set() and b.counts == {}  # it stood by, fetched nothing
            first_running.close()  # the first stops and releases its lease
            wait_until(b.working.is_set, 10, "the second poller to take over")
            dovecot.append(mail("nuevo@clinica.example", "Después", "hola"))
            wait_until(lambda: count(first, Ticket) == 31, 10, "the new mail via the second")
    assert count(first, RawMessage) == 31


@pytest.mark.dovecot
def test_a_dead_holders_lease_lapses_after_lease_seconds(tmp_path: Path, dovecot: Dovecot) -> None:
    app = instance(tmp_path, dovecot, "dos", f"sqlite:///{tmp_path / 'shared.db'}")
    standby = app.imap_poller(app.settings.imap.mailboxes[0])
    taken = time.monotonic()
    assert leases.acquire(app.sessions, "imap:soporte", "uno-crashed", 2)  # never renewed
    with running(standby):
        wait_until(standby.working.is_set, 10, "the stand-by to take over")
        assert time.monotonic() - taken >= 1.9  # not before the lease lapsed
