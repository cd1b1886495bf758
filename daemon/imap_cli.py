"""`buzon imap`: the IMAP pollers of every configured mailbox, plus the ingest worker."""

from __future__ import annotations

from daemon.app import App
from daemon.cli import EX_CONFIG, _fail, main, with_app
from daemon.components import imap_pollers, ingest_worker
from daemon.ops import http_option, run_service


@main.command("imap")
@http_option
@with_app
def imap(app: App, http: str | None) -> None:
    """Poll every configured IMAP mailbox (IDLE when offered) until SIGTERM."""
    if not app.settings.imap.mailboxes:
        _fail("no IMAP mailbox configured ([[imap.mailboxes]])", EX_CONFIG)
    run_service(app, lambda: {"ingest": ingest_worker(app).run, **imap_pollers(app)}, http)
