"""Which components `buzon run` starts, built from the configuration."""

from __future__ import annotations

from daemon.app import App
from daemon.imap_poller import poller_for
from daemon.ingest_worker import IngestWorker
from daemon.service import Component
from daemon.smtp_listener import listener_for


def ingest_worker(app: App) -> IngestWorker:
    cfg = app.settings.ingest
    return IngestWorker(
        app.sessions,
        app.policy,
        batch_size=cfg.batch_size,
        poll_interval=cfg.poll_interval,
        stale_claim_seconds=cfg.stale_claim_seconds,
        after_apply=app.after_apply,
    )


def imap_pollers(app: App) -> dict[str, Component]:
    """One poller per configured mailbox; none when no mailbox is configured."""
    return {f"imap:{m.name}": poller_for(app, m).run for m in app.settings.imap.mailboxes}


def all_components(app: App) -> dict[str, Component]:
    worker = ingest_worker(app)
    components: dict[str, Component] = {"ingest": worker.run, **imap_pollers(app)}
    if app.settings.smtp.enabled:
        components["smtp"] = listener_for(app, worker).run
    return components
