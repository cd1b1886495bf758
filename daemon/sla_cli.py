"""`buzon sla …`: a ticket's SLA clocks (registered on `buzon` by daemon/cli.py)."""

from __future__ import annotations

from typing import Any

import click

from daemon.app import App
from daemon.cli import _emit, main, with_app
from tickets.errors import TicketNotFound
from tickets.models import Ticket, utcnow
from tickets.sla import clocks_of, fired_keys


@main.group("sla")
def sla_group() -> None:
    """Service-level clocks."""


@sla_group.command("show")
@click.argument("number", type=int)
@click.option("--json", "as_json", is_flag=True)
@with_app
def sla_show(app: App, number: int, as_json: bool) -> None:
    """A ticket's clocks: targets, due times, pauses, what has fired."""
    policy = app.sla_policy
    now = utcnow()
    with app.sessions() as session:
        ticket = session.get(Ticket, number)
        if ticket is None:
            raise TicketNotFound(f"no ticket #{number}")
        clocks = clocks_of(ticket, policy)
        data: dict[str, Any] = {
            "number": ticket.id,
            "priority": ticket.priority,
            "level": ticket.level,
            "status": ticket.status,
            "paused_since": ticket.sla_paused_at,
            "paused_business_seconds": ticket.sla_paused_seconds,
            "next_check_at": ticket.sla_next_check_at,
            "calendar": policy.calendar.timezone,
            "clocks": [
                {
                    "name": c.name,
                    "target_business_hours": c.target_seconds / 3600,
                    "due_at": c.due_at,
                    "warn_at": c.warn_at,
                    "stopped_at": c.stopped_at,
                    "state": _state(c.due_at, c.stopped_at, c.paused, now),
                }
                for c in clocks
            ],
            "fired": {k: v for k, v in sorted(fired_keys(session, ticket.id).items())},
        }
    _emit(data, as_json, _print)


def _state(due: Any, stopped: Any, paused: bool, now: Any) -> str:
    if stopped is not None:
        return "stopped"
    if paused:
        return "paused"
    if due is None:
        return "not running"
    return "breached" if due <= now else "running"


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
