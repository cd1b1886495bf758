"""The `buzon` command, assembled from its groups (one module per group)."""

from __future__ import annotations

import os

import click

from daemon.cli import admin, doctor, inbound, outbox, run, sla, tickets


@click.group()
@click.option("--config", envvar="BUZON_CONFIG", type=click.Path(dir_okay=False), hidden=True)
def main(config: str | None) -> None:
    """buzón: email-to-ticket daemon."""


def entry() -> None:
    """The `buzon` console script and `python -m daemon`."""
    # Tickets, attachments and the key are private to the service user, whatever the
    # unit or the shell says (the units set UMask=0077 too).
    os.umask(0o077)
    main()


for command in (
    admin.config_group,
    admin.db_group,
    inbound.ingest,
    inbound.inbound_group,
    tickets.tickets_group,
    outbox.outbox_group,
    sla.sla_group,
    run.run,
    run.smtp,
    run.imap,
    run.scheduler,
    doctor.doctor,
):
    main.add_command(command)
