"""The `buzon` command, assembled from its groups (one module per group).

Each command's module is imported when that command runs (or `--help` lists it): a
one-shot command such as `buzon tickets list` does not pay for the SMTP, IMAP, scheduler
and web stacks the long-lived commands import."""

from __future__ import annotations

import gc
import importlib
from types import ModuleType

import click

# Command name → "module:attribute" under daemon.cli. A command added with
# `main.add_command` (imported eagerly) works too.
COMMANDS: dict[str, str] = {
    "config": "admin:config_group",
    "db": "admin:db_group",
    "ingest": "inbound:ingest",
    "inbound": "inbound:inbound_group",
    "tickets": "tickets:tickets_group",
    "outbox": "outbox:outbox_group",
    "webhooks": "webhooks:webhooks_group",
    "addresses": "addresses:addresses_group",
    "sla": "sla:sla_group",
    "console": "console:console_group",
    "agents": "agents:agents_group",
    "run": "run:run",
    "smtp": "run:smtp",
    "imap": "run:imap",
    "scheduler": "run:scheduler",
    "doctor": "doctor:doctor",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported by name, on first use."""

    # True when buzón runs in a process of its own (the console script, `python -m
    # daemon`): only then is the collector paused and frozen around a command's import
    # (`_import`), which acts on the whole process — not in a host that calls the group
    # (the tests, CliRunner).
    owns_process = False

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *super().list_commands(ctx)})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return super().get_command(ctx, cmd_name)
        module, _, attribute = COMMANDS[cmd_name].partition(":")
        name = f"daemon.cli.{module}"
        loaded = _import(name) if self.owns_process else importlib.import_module(name)
        command = getattr(loaded, attribute)
        assert isinstance(command, click.Command)
        return command


def _import(name: str) -> ModuleType:
    """A command's module, imported with the cyclic collector paused, and what the import
    built then set aside (gc.freeze): modules, classes and functions that live as long as
    the process. The import allocates most of what the process will ever hold
    (SQLAlchemy, pydantic, the models); collecting while that heap grows walked it over
    and over (~60 ms of CPU for `buzon tickets list`), and the interpreter's exit walked
    it once more (~120 ms). What the command creates afterwards (engine, connections,
    mail) is collected, and closed at exit, as before."""
    gc.disable()
    try:
        return importlib.import_module(name)
    finally:
        gc.freeze()
        gc.enable()


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    # A callback, not click.version_option(version()): importlib.metadata is read only
    # when --version is asked for.
    if not value or ctx.resilient_parsing:
        return
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("buzon")
    except PackageNotFoundError:  # run from a checkout that was never installed
        found = "unknown"
    click.echo(f"buzon {found}")
    ctx.exit()


@click.group(cls=LazyGroup)
# As daemon.cli.common.CONFIG_PATH (not imported here: it loads the config's pydantic).
@click.option("--config", envvar="BUZON_CONFIG", type=click.Path(readable=False), hidden=True)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version and exit.",
)
def main(config: str | None) -> None:
    """buzón: email-to-ticket daemon."""
