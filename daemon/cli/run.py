"""The long-lived commands: `buzon run` (everything), `buzon smtp`, `buzon imap` and
`buzon scheduler`. Each takes its runners from `daemon.wiring.RUNNERS`, adds the HTTP
endpoint, and serves until SIGTERM; a configuration error found while building them
(a bad TLS certificate, token file or busy port) is one line and exit 78.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click
from pydantic import ValidationError

from daemon.cli.common import EX_CONFIG, EX_TEMPFAIL, fail, with_service_app
from daemon.config import ConfigError, SmtpConfig
from daemon.supervisor import Component, run_loop, serve
from daemon.wiring import App

F = TypeVar("F", bound=Callable[..., Any])


def http_option(func: F) -> F:
    """Adds --http HOST:PORT to a long-running command."""
    return click.option(
        "--http",
        "http",
        metavar="HOST:PORT",
        help="Serve /healthz /readyz /metrics here (overrides http.listen; "
        "env BUZON_HTTP__LISTEN). Each process of a split deployment needs its own port.",
    )(func)


def serve_until_stopped(build: Callable[[], dict[str, Component]]) -> NoReturn:
    try:
        runners = build()
    except ConfigError as exc:
        fail(str(exc), EX_CONFIG)
    sys.exit(run_loop(serve(runners)))


@click.command("run")
@http_option
@with_service_app
def run(app: App, http: str | None) -> None:
    """Run every configured component in one process until SIGTERM."""
    serve_until_stopped(lambda: app.runners("run", http=http))


@click.command("smtp")
@click.option("--listen", metavar="HOST:PORT", help="Overrides smtp.listen.")
@http_option
@with_service_app
def smtp(app: App, listen: str | None, http: str | None) -> None:
    """Serve SMTP (LMTP with smtp.lmtp = true) and process what arrives, until SIGTERM."""
    config = _with_listen(app.settings.smtp, listen)
    serve_until_stopped(lambda: app.runners("smtp", smtp=config, http=http))


def _with_listen(config: SmtpConfig, listen: str | None) -> SmtpConfig:
    if listen is None:
        return config
    try:
        return SmtpConfig.model_validate({**config.model_dump(), "listen": listen})
    except ValidationError:
        fail(f"--listen: expected HOST:PORT, got {listen!r}", EX_CONFIG)


@click.command("imap")
@http_option
@with_service_app
def imap(app: App, http: str | None) -> None:
    """Poll every configured IMAP mailbox (IDLE when offered) until SIGTERM."""
    if not app.settings.imap.mailboxes:
        fail("no IMAP mailbox configured ([[imap.mailboxes]])", EX_CONFIG)
    serve_until_stopped(lambda: app.runners("imap", http=http))


@click.command("scheduler")
@click.option("--once", is_flag=True, help="Run every job once now, then exit (cron, tests).")
@http_option
@with_service_app
def scheduler(app: App, once: bool, http: str | None) -> None:
    """Run the scheduled jobs until SIGTERM (or once with --once)."""
    if not once:
        serve_until_stopped(lambda: app.runners("scheduler", http=http))
    results = app.scheduler().run_all_once()
    for name, ok in results.items():
        click.echo(f"{name}: {'ok' if ok else 'failed'}")
    # A failed job is retried by the next run: "try again later" for cron and systemd.
    sys.exit(0 if all(results.values()) else EX_TEMPFAIL)
