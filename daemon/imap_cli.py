"""`buzon imap`: the IMAP pollers of every configured mailbox, plus the ingest worker."""

from __future__ import annotations

import asyncio
import sys

from daemon.app import App
from daemon.cli import EX_CONFIG, _fail, main, with_app
from daemon.components import imap_pollers, ingest_worker
from daemon.service import serve


@main.command("imap")
@with_app
def imap(app: App) -> None:
    """Poll every configured IMAP mailbox (IDLE when offered) until SIGTERM."""
    pollers = imap_pollers(app)
    if not pollers:
        _fail("no IMAP mailbox configured ([[imap.mailboxes]])", EX_CONFIG)
    components = {"ingest": ingest_worker(app).run, **pollers}
    sys.exit(asyncio.run(serve(components)))
