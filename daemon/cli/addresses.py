"""`buzon addresses …`: what buzón knows of correspondents' addresses, and the bouncing
marks that stop mail to them (list, clear)."""

from __future__ import annotations

from typing import Any

import click

from daemon import operations
from daemon.cli.common import emit_rows, with_app
from daemon.cli.listing import list_options
from daemon.wiring import App


@click.group("addresses")
def addresses_group() -> None:
    """Correspondents' addresses and their bouncing marks."""


@addresses_group.command("list")
@click.option("--bouncing", is_flag=True, help="Only addresses marked bouncing (not mailed).")
@list_options(limit=1000)
@with_app
def addresses_list(app: App, bouncing: bool, limit: int, as_json: bool) -> None:
    """Known addresses, latest bounce first; expired marks are lifted first."""
    rows = operations.list_addresses(
        app.sessions, app.expire_bouncing, bouncing=bouncing, limit=limit
    )
    emit_rows(rows, as_json, _line, "no bouncing address" if bouncing else "no address")


def _line(a: dict[str, Any]) -> str:
    when = a["bounced_at"].strftime("%Y-%m-%d %H:%M UTC") if a["bounced_at"] else "-"
    state = "bouncing" if a["bouncing"] else "ok"
    return f"{a['email']:<40} {state:<9} {when:<20} {(a['reason'] or '')[:100]}"


@addresses_group.command("clear")
@click.argument("address", nargs=-1, required=True)
@with_app
def addresses_clear(app: App, address: tuple[str, ...]) -> None:
    """Lift the bouncing mark of ADDRESS (e.g. the customer fixed their mailbox)."""
    cleared, unmarked = operations.clear_addresses(app.sessions, address)
    for email in cleared:
        click.echo(f"{email}: mark cleared; mail to it resumes")
    for email in unmarked:
        click.echo(f"{email}: not marked bouncing")
