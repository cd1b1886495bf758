"""`buzon webhooks …`: deliveries of ticket events to the configured hooks; retry."""

from __future__ import annotations

from typing import Any

import click

from daemon import operations
from daemon.cli.common import with_app
from daemon.cli.listing import list_command, one_or_every
from daemon.wiring import App
from tickets import webhooks
from tickets.models import utcnow


@click.group("webhooks")
def webhooks_group() -> None:
    """Deliveries of ticket events to the configured webhooks."""


def _line(r: dict[str, Any]) -> str:
    return (
        f"{r['id']:<7} {r['state']:<8} {r['hook']:<16} {r['event']:<17} "
        f"ticket {r['ticket'] or '-':<6} attempts {r['attempts']}  {(r['last_error'] or '')[:80]}"
    )


list_command(
    webhooks_group,
    "Deliveries, newest first (the bodies are not shown).",
    states=webhooks.STATES,
    rows=lambda session, state, limit: webhooks.list_deliveries(session, state=state, limit=limit),
    line=_line,
    none="no deliveries",
)


@webhooks_group.command("retry")
@click.argument("delivery_id", type=int, required=False)
@click.option("--dead", is_flag=True, help="Every dead delivery.")
@with_app
def webhooks_retry(app: App, delivery_id: int | None, dead: bool) -> None:
    """Put a dead delivery (ID, or all with --dead) back in line; the next pass sends it."""
    one_or_every(delivery_id, dead, "give a delivery ID or --dead (not both)")
    if dead:
        count = operations.retry_dead_webhooks(app.sessions, utcnow())
        click.echo(f"webhooks: {count} dead deliveries pending again")
    else:
        assert delivery_id is not None
        operations.retry_webhook(app.sessions, delivery_id, utcnow())
        click.echo(f"webhook delivery {delivery_id}: pending again")
