"""`buzon sla show`: a ticket's SLA clocks."""

from __future__ import annotations

from typing import Any

import click

from daemon.cli.common import emit, with_app
from daemon.wiring import App
from tickets import queries
from tickets.models import utcnow


@click.group("sla")
def sla_group() -> None:
    """Service-level clocks."""


@sla_group.command("show")
@click.argument("number", type=int)
@click.option("--json", "as_json", is_flag=True)
@with_app
def sla_show(app: App, number: int, as_json: bool) -> None:
    """A ticket's clocks: targets, due times, pauses, what has fired."""
    with app.sessions() as session:
        data = queries.sla_report(session, number, app.sla_policy, utcnow())
    emit(data, as_json, _print)


def _print(data: dict[str, Any]) -> None:
    click.echo(
        f"#{data['number']} {data['priority']} level {data['level']} {data['status']} "
        f"(calendar {data['calendar']})"
    )
    for c in data["clocks"]:
        click.echo(
            f"  {c['name']:<15} target {c['target_business_hours']:g} business h  "
            f"{c['state']:<10} due {c['due_at'] or '-'}  stopped {c['stopped_at'] or '-'}"
        )
    if data["paused_since"]:
        click.echo(f"  paused since {data['paused_since']}")
    click.echo(f"  paused so far: {data['paused_business_seconds'] / 3600:.1f} business h")
    for key, at in data["fired"].items():
        click.echo(f"  fired {key} at {at}")
