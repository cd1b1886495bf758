"""`buzon scheduler`: outbox delivery, SLA scan, auto-close and reminders (registered on
`buzon` by daemon/cli.py)."""

from __future__ import annotations

import sys

import click

from daemon.app import App
from daemon.cli import EX_TEMPFAIL, main, with_app
from daemon.ops import http_option, run_service
from daemon.scheduler import Scheduler


@main.command("scheduler")
@click.option("--once", is_flag=True, help="Run every job once now, then exit (cron, tests).")
@http_option
@with_app
def scheduler(app: App, once: bool, http: str | None) -> None:
    """Run the scheduled jobs until SIGTERM (or once with --once)."""
    jobs = Scheduler(app)
    if not once:
        run_service(app, lambda: {"scheduler": jobs.run}, http)
    results = jobs.run_all_once()
    for name, ok in results.items():
        click.echo(f"{name}: {'ok' if ok else 'failed'}")
    # A failed job is retried by the next run: "try again later" for cron and systemd.
    sys.exit(0 if all(results.values()) else EX_TEMPFAIL)
