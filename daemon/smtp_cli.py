"""`buzon smtp`: the SMTP (or LMTP) listener plus the ingest worker, until SIGTERM."""

from __future__ import annotations

import click
from pydantic import ValidationError

from daemon.app import App
from daemon.cli import main, with_app
from daemon.components import ingest_worker
from daemon.config import ConfigError, SmtpConfig
from daemon.health import watch_listener
from daemon.ops import http_option, run_service
from daemon.service import Component
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
@http_option
@with_app
def smtp(app: App, listen: str | None, http: str | None) -> None:
    """Serve SMTP (LMTP with smtp.lmtp = true) and process what arrives, until SIGTERM."""

    def build() -> dict[str, Component]:
        worker = ingest_worker(app)
        listener = listener_for(app, worker, _with_listen(app.settings.smtp, listen))
        watch_listener(app.health, listener)
        return {"ingest": worker.run, "smtp": listener.run}

    run_service(app, build, http)
