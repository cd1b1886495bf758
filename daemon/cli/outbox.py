"""`buzon outbox …`: outbound mail waiting, sent or failed; deliver and retry."""

from __future__ import annotations

from typing import Any

import click
from sqlalchemy.orm import Session

from daemon import operations
from daemon.cli.common import EX_DATAERR, fail, with_app
from daemon.cli.listing import list_options, show
from daemon.wiring import App
from notifier import outbox
from notifier.errors import OutboxError
from tickets.models import utcnow


@click.group("outbox")
def outbox_group() -> None:
    """Outbound mail waiting, sent or failed."""


@outbox_group.command("deliver")
@with_app
def outbox_deliver(app: App) -> None:
    """Send what is due now (to the relay, or the local Maildir), once."""
    counts = app.deliver_counts(utcnow())
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    click.echo(f"outbox: {summary or 'nothing due'}")


@outbox_group.command("list")
@click.option("--failed", is_flag=True, help="Only mails that failed for good.")
@list_options([outbox.PENDING, outbox.SENT, outbox.FAILED])
@with_app
def outbox_list(app: App, failed: bool, state: str | None, limit: int, as_json: bool) -> None:
    """Outbound mails, newest first."""

    def rows(session: Session) -> list[dict[str, Any]]:
        return outbox.list_rows(session, state=outbox.FAILED if failed else state, limit=limit)

    show(app.sessions, rows, as_json, _outbox_line, "no mails")


def _outbox_line(r: dict[str, Any]) -> str:
    return (
        f"{r['id']:<7} {r['state']:<8} {r['kind']:<16} ticket {r['ticket'] or '-':<6} "
        f"{len(r['recipients'])} rcpt  attempts {r['attempts']}  "
        f"{(r['last_error'] or '')[:80]}"
    )


@outbox_group.command("retry")
@click.argument("outbox_id", type=int)
@with_app
def outbox_retry(app: App, outbox_id: int) -> None:
    """Put a failed mail back in line; the next delivery pass sends it."""
    try:
        operations.retry_outbox(app.sessions, outbox_id, utcnow())
    except OutboxError as exc:
        fail(str(exc), EX_DATAERR)
    click.echo(f"outbox {outbox_id}: pending again")
