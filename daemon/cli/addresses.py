"""`buzon addresses …`: what buzón knows of correspondents' addresses, and the bouncing
marks that stop mail to them (list, clear)."""

from __future__ import annotations

from typing import Any

import click

from daemon.cli.common import emit_rows, with_app
from daemon.wiring import App
from tickets import queries
from tickets.addresses import clear_bouncing
from tickets.models import utcnow


@click.group("addresses")
def addresses_group() -> None:
    """Correspondents' addresses and their bouncing marks."""


@addresses_group.command("list")
@click.option("--bouncing", is_flag=True, help="Only addresses marked bouncing (not mailed).")
@click.option("--limit", default=1000, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@with_app
def addresses_list(app: App, bouncing: bool, limit: int, as_json: bool) -> None:
    """Known addresses, latest bounce first; expired marks are lifted first."""
    app.expire_bouncing(utcnow())
    with app.sessions() as session:
        rows = queries.list_addresses(session, bouncing=bouncing, limit=limit)
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
    with app.sessions.begin() as session:
        cleared = clear_bouncing(session, address)
    for email in cleared:
        click.echo(f"{email}: mark cleared; mail to it resumes")
    for email in sorted({a.strip().lower() for a in address} - set(cleared)):
        click.echo(f"{email}: not marked bouncing")
