"""`buzon smtp`: the SMTP (or LMTP) listener plus the ingest worker, until SIGTERM."""

from __future__ import annotations

import asyncio
import sys

import click
from pydantic import ValidationError

from daemon.app import App
from daemon.cli import EX_CONFIG, _fail, main, with_app
from daemon.components import ingest_worker
from daemon.config import ConfigError, SmtpConfig
from daemon.service import serve
from daemon.smtp_listener import listener_for


def _with_listen(config: SmtpConfig, listen: str | None) -> SmtpConfig:
    if listen is None:
        return config
    try:
        return SmtpConfig.model_validate({**config.model_dump(), "listen": listen})
    except ValidationError:
        raise ConfigError(f"--listen: expected HOST:PORT, got {listen!r}") from None


@main.command("smtp")
@click.option("--listen", metavar="HOST:PORT", help="Overrides smtp.listen.")
@with_app
def smtp(app: App, listen: str | None) -> None:
    """Serve SMTP (LMTP with smtp.lmtp = true) and process what arrives, until SIGTERM."""
    worker = ingest_worker(app)
    try:
        listener = listener_for(app, worker, _with_listen(app.settings.smtp, listen))
    except ConfigError as exc:
        _fail(str(exc), EX_CONFIG)
    sys.exit(asyncio.run(serve({"ingest": worker.run, "smtp": listener.run})))
