"""Which components `buzon run` starts, built from the configuration."""

from __future__ import annotations

from daemon.app import App
from daemon.health import watch_listener, watch_poller, watch_worker
from daemon.imap_poller import poller_for
from daemon.ingest_worker import IngestWorker
from daemon.scheduler import Scheduler
from daemon.service import Component
from daemon.smtp_listener import listener_for


def ingest_worker(app: App) -> IngestWorker:
    cfg = app.settings.ingest
    worker = IngestWorker(
        app.sessions,
        app.policy,
        batch_size=cfg.batch_size,
        poll_interval=cfg.poll_interval,
        stale_claim_seconds=cfg.stale_claim_seconds,
        after_apply=app.after_apply,
    )
    watch_worker(app.health, worker)
    return worker


def imap_pollers(app: App) -> dict[str, Component]:
    """One poller per configured mailbox; none when no mailbox is configured."""
    pollers = [poller_for(app, m) for m in app.settings.imap.mailboxes]
    for poller in pollers:
        watch_poller(app.health, poller)
    return {f"imap:{p.name}": p.run for p in pollers}


def all_components(app: App) -> dict[str, Component]:
    worker = ingest_worker(app)
    components: dict[str, Component] = {"ingest": worker.run, **imap_pollers(app)}
    if app.settings.smtp.enabled:
        listener = listener_for(app, worker)
        watch_listener(app.health, listener)
        components["smtp"] = listener.run
    components["scheduler"] = Scheduler(app).run
    return components
