"""The `buzon` command, assembled from its groups (one module per group)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import click

from daemon.cli import (
    addresses,
    admin,
    agents,
    console,
    doctor,
    inbound,
    outbox,
    run,
    sla,
    tickets,
    webhooks,
)
from daemon.cli.common import CONFIG_PATH


def _version() -> str:
    try:
        return version("buzon")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


@click.group()
@click.option("--config", envvar="BUZON_CONFIG", type=CONFIG_PATH, hidden=True)
@click.version_option(_version(), "--version", prog_name="buzon", message="%(prog)s %(version)s")
def main(config: str | None) -> None:
    """buzón: email-to-ticket daemon."""


for command in (
    admin.config_group,
    admin.db_group,
    inbound.ingest,
    inbound.inbound_group,
    tickets.tickets_group,
    outbox.outbox_group,
    webhooks.webhooks_group,
    addresses.addresses_group,
    sla.sla_group,
    console.console_group,
    agents.agents_group,
    run.run,
    run.smtp,
    run.imap,
    run.scheduler,
    doctor.doctor,
):
    main.add_command(command)
