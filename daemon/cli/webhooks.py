"""`buzon webhooks …`: deliveries of ticket events to the configured hooks; retry."""

from __future__ import annotations

from typing import Any

import click

from daemon.cli.common import emit_rows, fail, with_app
from daemon.wiring import App
from tickets import webhooks
from tickets.models import utcnow


@click.group("webhooks")
def webhooks_group() -> None:
    """Deliveries of ticket events to the configured webhooks."""


@webhooks_group.command("list")
@click.option("--state", type=click.Choice(webhooks.STATES))
@click.option("--limit", default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@with_app
def webhooks_list(app: App, state: str | None, limit: int, as_json: bool) -> None:
    """Deliveries, newest first (the bodies are not shown)."""
    with app.sessions() as session:
        rows = webhooks.list_deliveries(session, state=state, limit=limit)
    emit_rows(rows, as_json, _line, "no deliveries")


def _line(r: dict[str, Any]) -> str:
    return (
        f"{r['id']:<7} {r['state']:<8} {r['hook']:<16} {r['event']:<17} "
        f"ticket {r['ticket'] or '-':<6} attempts {r['attempts']}  {(r['last_error'] or '')[:80]}"
    )


@webhooks_group.command("retry")
@click.argument("delivery_id", type=int, required=False)
@click.option("--dead", is_flag=True, help="Every dead delivery.")
@with_app
def webhooks_retry(app: App, delivery_id: int | None, dead: bool) -> None:
    """Put a dead delivery (ID, or all with --dead) back in line; the next pass sends it."""
    if (delivery_id is None) == (not dead):
        fail("give a delivery ID or --dead (not both)", 2)
    with app.sessions.begin() as session:
        if dead:
            count = webhooks.retry_dead(session, utcnow())
            message = f"webhooks: {count} dead deliveries pending again"
        else:
            assert delivery_id is not None
            webhooks.retry(session, delivery_id, utcnow())
            message = f"webhook delivery {delivery_id}: pending again"
    click.echo(message)
