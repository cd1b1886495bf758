"""Agents' commands on `buzon tickets …` and the outbox commands `buzon outbox …`.

Each ticket command is one transaction: the domain action, the SLA clocks and the
outbox rows of its notification commit together or not at all.
"""

from __future__ import annotations

import getpass
import mimetypes
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from sqlalchemy.orm import Session

from daemon.app import App
from daemon.cli import EX_DATAERR, _emit, _fail, main, tickets_group, with_app
from notifier import outbox
from notifier.delivery import deliver_due
from notifier.errors import OutboxError
from notifier.notify import Queued
from tickets import actions
from tickets.blobstore import BlobStore
from tickets.changes import Change
from tickets.lifecycle import Status
from tickets.models import Ticket, utcnow

Action = Callable[[Session, Ticket], list[Change]]
STATUSES = [s.value for s in Status]


def _default_agent() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name for this uid (containers)
        return "agent"


def as_agent(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--as",
        "actor",
        envvar="BUZON_AGENT",
        default=_default_agent,
        show_default="$BUZON_AGENT or the OS user",
        help="Who does this (recorded on the ticket's history).",
    )(func)


def _act(app: App, number: int, action: Action) -> tuple[list[Change], list[Queued]]:
    with app.sessions.begin() as session:
        ticket = actions.load_ticket(session, number)
        changes = action(session, ticket)
        app.refresh_sla(session, changes)
        queued = app.notifier.notify(session, changes)
    return changes, queued


def _report(number: int, what: str, queued: list[Queued]) -> None:
    mail = ""
    for q in queued:
        if q.outbox_id is not None:
            mail += f"; {q.kind} mail queued for {len(q.recipients)} recipient(s)"
            mail += f" (outbox {q.outbox_id})"
        else:
            mail += f"; no {q.kind} mail sent"
        if q.refused:
            mail += " (skipped " + ", ".join(f"{e}: {r}" for e, r in q.refused) + ")"
    click.echo(f"ticket #{number}: {what}{mail}")


def _read_text(file: str | None, text: str | None) -> str:
    if text is not None:
        return text
    if file is None or file == "-":
        return sys.stdin.read()
    try:
        return Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"cannot read {file}: {exc}", EX_DATAERR)
        raise AssertionError("unreachable") from exc


# --- tickets ------------------------------------------------------------------------------


@tickets_group.command("status")
@click.argument("number", type=int)
@click.argument("status", type=str)
@click.option("--note", help="Why (kept on the history; not mailed).")
@as_agent
@with_app
def tickets_status(app: App, number: int, status: str, note: str | None, actor: str) -> None:
    """Move a ticket to STATUS (new, in_progress, waiting_on_customer, on_hold, resolved,
    closed); customers and watchers are told."""
    _, queued = _act(
        app, number, lambda s, t: actions.set_status(s, t, status.strip().lower(), actor, note)
    )
    _report(number, f"now {status}", queued)


@tickets_group.command("assign")
@click.argument("number", type=int)
@click.option("--agent", help="The agent who handles it.")
@click.option("--team", help="The team that handles it.")
@as_agent
@with_app
def tickets_assign(app: App, number: int, agent: str | None, team: str | None, actor: str) -> None:
    """Give a ticket to an agent and/or a team; the customer hears who handles it."""
    _, queued = _act(
        app,
        number,
        lambda s, t: actions.assign(s, t, actor, agent=agent, team=team, catalogue=app.catalogue),
    )
    who = " / ".join(x for x in (agent, team) if x)
    _report(number, f"assigned to {who}", queued)


@tickets_group.command("escalate")
@click.argument("number", type=int)
@click.option("--team", required=True, help="The team or specialty that takes it over.")
@click.option("--reason", required=True, help="Why: the more detail, the better.")
@click.option("--type", "escalation_type", required=True, help="Escalation type (a category).")
@as_agent
@with_app
def tickets_escalate(
    app: App, number: int, team: str, reason: str, escalation_type: str, actor: str
) -> None:
    """Move a ticket to the second level: the team gets it as new, with an internal note.
    Customers are not told."""
    _act(
        app,
        number,
        lambda s, t: actions.escalate(
            s,
            t,
            actor,
            team=team,
            reason=reason,
            escalation_type=escalation_type,
            catalogue=app.catalogue,
        ),
    )
    click.echo(f"ticket #{number}: escalated to {team} (level 2, status new)")


@tickets_group.command("note")
@click.argument("number", type=int)
@click.argument("text", required=False)
@click.option("--file", "file", help="Read the note from a file ('-' for stdin).")
@as_agent
@with_app
def tickets_note(app: App, number: int, text: str | None, file: str | None, actor: str) -> None:
    """Add an internal note (TEXT, --file or stdin); never mailed."""
    body = _read_text(file, text)
    _act(app, number, lambda s, t: actions.add_note(s, t, actor, body))
    click.echo(f"ticket #{number}: note added")


@tickets_group.command("reply")
@click.argument("number", type=int)
@click.option("--file", "file", required=True, help="The answer's text ('-' for stdin).")
@click.option(
    "--attach",
    "attach",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="A file to attach (repeatable).",
)
@click.option("--status", type=click.Choice(STATUSES), help="Also move the ticket to this.")
@as_agent
@with_app
def tickets_reply(
    app: App, number: int, file: str, attach: tuple[str, ...], status: str | None, actor: str
) -> None:
    """Answer the customer (and watchers) by mail, with attachments."""
    body = _read_text(file, None)
    files = [
        actions.NewAttachment(
            Path(p).name,
            mimetypes.guess_type(p)[0] or "application/octet-stream",
            Path(p).read_bytes(),
        )
        for p in attach
    ]
    blobs = BlobStore(app.settings.attachments_dir)
    _, queued = _act(
        app,
        number,
        lambda s, t: actions.reply(
            s, t, actor, body, attachments=files, blobs=blobs, status=status
        ),
    )
    _report(number, "reply recorded", queued)


@tickets_group.command("priority")
@click.argument("number", type=int)
@click.option("--impact", required=True, help="high, medium or low (as configured).")
@click.option("--urgency", required=True, help="high, medium or low (as configured).")
@as_agent
@with_app
def tickets_priority(app: App, number: int, impact: str, urgency: str, actor: str) -> None:
    """Set impact and urgency; the priority follows from the matrix."""
    changes, _ = _act(
        app,
        number,
        lambda s, t: actions.set_priority(
            s, t, actor, impact=impact, urgency=urgency, matrix=app.catalogue.matrix
        ),
    )
    with app.sessions() as session:
        ticket = session.get(Ticket, number)
        priority = ticket.priority if ticket else "?"
    click.echo(f"ticket #{number}: priority {priority}" + ("" if changes else " (unchanged)"))


# --- outbox -------------------------------------------------------------------------------


@main.group("outbox")
def outbox_group() -> None:
    """Outbound mail waiting, sent or failed."""


@outbox_group.command("deliver")
@with_app
def outbox_deliver(app: App) -> None:
    """Send what is due now (to the relay, or the local Maildir), once."""
    counts = deliver_due(app.sessions, app.transport(), utcnow(), app.delivery_policy)
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    click.echo(f"outbox: {summary or 'nothing due'}")


@outbox_group.command("list")
@click.option("--failed", is_flag=True, help="Only mails that failed for good.")
@click.option("--state", type=click.Choice([outbox.PENDING, outbox.SENT, outbox.FAILED]))
@click.option("--limit", default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@with_app
def outbox_list(app: App, failed: bool, state: str | None, limit: int, as_json: bool) -> None:
    """Outbound mails, newest first."""
    with app.sessions() as session:
        rows = outbox.list_rows(session, state=outbox.FAILED if failed else state, limit=limit)

    def human(items: list[dict[str, Any]]) -> None:
        for r in items:
            click.echo(
                f"{r['id']:<7} {r['state']:<8} {r['kind']:<16} ticket {r['ticket'] or '-':<6} "
                f"{len(r['recipients'])} rcpt  attempts {r['attempts']}  "
                f"{(r['last_error'] or '')[:80]}"
            )
        if not items:
            click.echo("no mails")

    _emit(rows, as_json, human)


@outbox_group.command("retry")
@click.argument("outbox_id", type=int)
@with_app
def outbox_retry(app: App, outbox_id: int) -> None:
    """Put a failed mail back in line; the next delivery pass sends it."""
    try:
        with app.sessions.begin() as session:
            outbox.retry(session, outbox_id, utcnow())
    except OutboxError as exc:
        _fail(str(exc), EX_DATAERR)
    click.echo(f"outbox {outbox_id}: pending again")
