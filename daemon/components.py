"""Which components `buzon run` starts, built from the configuration."""

from __future__ import annotations

from daemon.app import App
from daemon.ingest_worker import IngestWorker
from daemon.service import Component


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


def all_components(app: App) -> dict[str, Component]:
    worker = ingest_worker(app)
    return {"ingest": worker.run}
