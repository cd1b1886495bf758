"""`buzon config check` and `buzon db upgrade`."""

from __future__ import annotations

import click

from daemon.cli.common import CONFIG_PATH, EX_CONFIG, fail, with_service_app
from daemon.config import ConfigError, load_settings
from daemon.wiring import App


@click.group("config")
def config_group() -> None:
    """Configuration."""


@config_group.command("check")
@click.argument("file", required=False, type=CONFIG_PATH)
@click.option("--config", envvar="BUZON_CONFIG", type=CONFIG_PATH)
def config_check(file: str | None, config: str | None) -> None:
    """Validate a config file (and BUZON_* variables); print the effective settings."""
    try:
        settings = load_settings(file or config)
    except ConfigError as exc:
        fail(str(exc), EX_CONFIG)
    click.echo(
        f"ok: database {settings.db_url.split('@')[-1]}, "
        f"support {', '.join(settings.support_addresses)}"
    )


@click.group("db")
def db_group() -> None:
    """Database schema."""


@db_group.command("upgrade")
@with_service_app
def db_upgrade(app: App) -> None:
    """Apply every pending migration (also done at every start)."""
    click.echo("schema is current")
