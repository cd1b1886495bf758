"""`buzon tickets …`: list and show tickets, and the agents' actions on them.

Each action goes through the desk: the domain change, the SLA clocks and the outbox
rows of its notification commit together or not at all.
"""

from __future__ import annotations

import getpass
import mimetypes
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import click

from daemon import operations
from daemon.cli.common import (
    DURATION,
    EX_DATAERR,
    EX_UNAVAILABLE,
    emit,
    emit_rows,
    fail,
    with_app,
)
from daemon.wiring import App
from tickets import actions, listing, queries, shaping
from tickets.blobstore import BlobStore
from tickets.lifecycle import Status, status_named
from tickets.listing import TicketFilters
from tickets.models import Ticket, utcnow

if TYPE_CHECKING:
    from notifier.mail import Queued

STATUSES = [s.value for s in Status]


@click.group("tickets")
def tickets_group() -> None:
    """List and show tickets."""


@tickets_group.command("list")
@click.option(
    "--status", help="Only this status (new, in_progress, … or resuelto, en curso, abiertos)."
)
@click.option("--level", type=click.IntRange(1, 2))
@click.option("--requester", help="Requester's address.")
@click.option("--team", help="Only this team's tickets.")
@click.option("--assignee", help="Only tickets of this agent.")
@click.option("--category", help="Only this category (escalation type).")
@click.option("--tag", help="Only tickets a routing rule tagged so (e.g. urgente).")
@click.option("--search", "words", help="Only tickets whose text has these words.")
@click.option("--breached", is_flag=True, help="Only tickets past an SLA due time.")
@click.option("--due-within", type=DURATION, help="Only tickets due within e.g. 2h, 30m, 1d.")
@click.option("--limit", default=100, show_default=True)
@click.option("--offset", default=0, show_default=True, help="Tickets to skip (paging).")
@click.option("--json", "as_json", is_flag=True)
@with_app
def tickets_list(
    app: App,
    status: str | None,
    level: int | None,
    requester: str | None,
    team: str | None,
    assignee: str | None,
    category: str | None,
    tag: str | None,
    words: str | None,
    breached: bool,
    due_within: timedelta | None,
    limit: int,
    offset: int,
    as_json: bool,
) -> None:
    """Tickets, newest first (by due time with --breached / --due-within)."""
    filters = TicketFilters(
        status, level, requester, team, assignee, category, tag, words, breached, due_within
    )
    with app.sessions() as session:
        rows = listing.list_tickets(
            session, app.catalogue, filters, utcnow(), limit=limit, offset=offset
        )

    emit_rows(rows, as_json, _ticket_line, "no tickets")


def _ticket_line(t: dict[str, Any]) -> str:
    return (
        f"#{t['number']:<6} {t['status']:<20} L{t['level']} {t['priority']} "
        f"{t['requester']:<30} {t['assignee'] or '-':<24} {t['subject'][:60]}"
    )


@tickets_group.command("search")
@click.argument("words")
@click.option("--limit", default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@with_app
def tickets_search(app: App, words: str, limit: int, as_json: bool) -> None:
    """Tickets whose subject or mails contain WORDS (any inflection, any accents), best
    match first."""
    with app.sessions() as session:
        rows = listing.search_tickets(session, words, limit)
    emit_rows(rows, as_json, _ticket_line, "no tickets")


@tickets_group.command("show")
@click.argument("number", type=int)
@click.option("--json", "as_json", is_flag=True)
@with_app
def tickets_show(app: App, number: int, as_json: bool) -> None:
    """One ticket: thread, participants, attachments and history."""
    with app.sessions() as session:
        data = queries.ticket_detail(session, number, utcnow())
    zone = ZoneInfo(app.settings.sla.timezone)
    emit(data, as_json, lambda t: _print_ticket(t, zone))


def _local(moment: datetime, zone: ZoneInfo) -> str:
    """A stored UTC time as agents read it: the desk's time zone, to the minute."""
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")


def _print_ticket(t: dict[str, Any], zone: ZoneInfo) -> None:
    click.echo(f"#{t['number']} {t['subject']}")
    click.echo(
        f"  status {t['status']}  level {t['level']}  priority {t['priority']}  "
        f"category {t['category']}  language {t['language']}"
    )
    click.echo(
        f"  requester {t['requester']}  assignee {t['assignee'] or '-'}  team {t['team'] or '-'}"
    )
    if t["parent"]:
        click.echo(f"  follows up ticket #{t['parent']}")
    similar = t["similar"]
    if similar["same_requester"] or similar["related"]:
        click.echo(
            "  posibles duplicados: "
            + (" ".join(f"#{n}" for n in similar["same_requester"]) or "-")
            + "  relacionados: "
            + (" ".join(f"#{n}" for n in similar["related"]) or "-")
        )
    if t["survey_rating"] is not None:
        comment = f" «{t['survey_comment']}»" if t["survey_comment"] else ""
        click.echo(f"  survey rating {t['survey_rating']}/5{comment}")
    click.echo("participants:")
    for p in t["participants"]:
        click.echo(f"  {p['role']:<10} {p['email']}")
    click.echo("thread:")
    for a in t["articles"]:
        when = _local(a["created_at"], zone)
        click.echo(f"  [{a['number']}] {when} {a['kind']} from {a['from'] or a['author']}")
        for line in (a["new_text"] or "").strip().splitlines()[:20]:
            click.echo(f"      {line}")
        for f in a["attachments"]:
            click.echo(
                f"      📎 [{f['id']}] {f['filename']} ({f['content_type']}, {f['size']} bytes)"
            )
    click.echo("history:")
    for e in t["events"]:
        change = f" {e['field']}: {e['old'] or '-'} → {e['new'] or '-'}" if e["field"] else ""
        why = "; ".join(f"{k} {e['data'][k]}" for k in ("type", "reason", "note") if k in e["data"])
        why = f" ({why})" if why else ""
        click.echo(f"  {_local(e['at'], zone)} {e['kind']}{change} by {e['actor']}{why}")
    spent = [f"level {k} {_hm(v)}" for k, v in t["time_by_level"].items()]
    spent += [f"team {k} {_hm(v)}" for k, v in t["time_by_team"].items()]
    click.echo("time open (h:mm): " + "  ".join(spent))


def _hm(seconds: float) -> str:
    return f"{int(seconds) // 3600}:{int(seconds) % 3600 // 60:02d}"


# --- agents' actions ----------------------------------------------------------------------


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
        fail(f"cannot read {file}: {exc}", EX_DATAERR)
        raise AssertionError("unreachable") from exc


@tickets_group.command("status")
@click.argument("number", type=int)
@click.argument("status", type=str)
@click.option("--note", help="Why (kept on the history; not mailed).")
@as_agent
@with_app
def tickets_status(app: App, number: int, status: str, note: str | None, actor: str) -> None:
    """Move a ticket to STATUS (new, in_progress, waiting_on_customer, on_hold, resolved,
    closed); customers and watchers are told."""
    done = app.desk.act(
        number, lambda s, t: actions.set_status(s, t, status.strip().lower(), actor, note)
    )
    _report(number, f"now {status_named(status).value}", done.queued)


@tickets_group.command("assign")
@click.argument("number", type=int)
@click.option("--agent", help="The agent who handles it.")
@click.option("--team", help="The team that handles it.")
@click.option("--note", help="Why (needed to take it from another agent; kept as a note).")
@as_agent
@with_app
def tickets_assign(
    app: App, number: int, agent: str | None, team: str | None, note: str | None, actor: str
) -> None:
    """Give a ticket to an agent and/or a team; the customer hears who handles it, the
    agent is told by mail."""
    done = app.desk.act(
        number,
        lambda s, t: actions.assign(
            s, t, actor, agent=agent, team=team, catalogue=app.catalogue, note=note
        ),
    )
    who = " / ".join(x for x in (agent, team) if x)
    _report(number, f"assigned to {who}", done.queued)


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
    app.desk.act(
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
    app.desk.act(number, lambda s, t: actions.add_note(s, t, actor, body))
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
    done = operations.reply(
        app.desk, blobs, app.expire_bouncing, number, actor, body, files, status
    )
    _report(number, "reply recorded", done.queued)
    unsent = operations.unsent(number, done.queued)
    if unsent is not None:
        fail(unsent, EX_UNAVAILABLE)


@tickets_group.command("priority")
@click.argument("number", type=int)
@click.option("--impact", required=True, help="high, medium or low (as configured).")
@click.option("--urgency", required=True, help="high, medium or low (as configured).")
@as_agent
@with_app
def tickets_priority(app: App, number: int, impact: str, urgency: str, actor: str) -> None:
    """Set impact and urgency; the priority follows from the matrix."""
    done = app.desk.act(
        number,
        lambda s, t: actions.set_priority(
            s, t, actor, impact=impact, urgency=urgency, matrix=app.catalogue.matrix
        ),
    )
    with app.sessions() as session:
        ticket = session.get(Ticket, number)
        priority = ticket.priority if ticket else "?"
    click.echo(f"ticket #{number}: priority {priority}" + ("" if done.changes else " (unchanged)"))


# --- shaping a ticket ----------------------------------------------------------------------


@tickets_group.command("create")
@click.option("--requester", required=True, help="The customer's address.")
@click.option("--subject", required=True)
@click.option("--file", "file", help="What they asked, from a file ('-' for stdin).")
@click.option("--text", help="What they asked (instead of --file).")
@click.option("--cc", multiple=True, help="A colleague to keep informed (repeatable).")
@click.option("--source", type=click.Choice(shaping.SOURCES), default="phone", show_default=True)
@click.option("--language", type=click.Choice(["es", "en"]))
@click.option("--no-ack", is_flag=True, help="Do not send the customer an acknowledgement.")
@as_agent
@with_app
def tickets_create(
    app: App,
    requester: str,
    subject: str,
    file: str | None,
    text: str | None,
    cc: tuple[str, ...],
    source: str,
    language: str | None,
    no_ack: bool,
    actor: str,
) -> None:
    """Register a request that came by phone, chat or in person (seeds 002/003)."""
    body = _read_text(file, text) if (file or text) else ""
    done = operations.create_ticket(
        app.desk,
        actor,
        requester=requester,
        subject=subject,
        text=body,
        cc=cc,
        source=source,
        language=language or app.settings.default_language,
        acknowledge=not no_ack,
    )
    _report(done.changes[0].ticket_id, f"opened ({source})", done.queued)


@tickets_group.command("category")
@click.argument("number", type=int)
@click.argument("category")
@as_agent
@with_app
def tickets_category(app: App, number: int, category: str, actor: str) -> None:
    """Put a ticket in CATEGORY (an escalation type); its SLA targets follow."""
    name = app.catalogue.category(category)
    app.desk.act(number, lambda s, t: shaping.set_category(s, t, actor, name))
    click.echo(f"ticket #{number}: category {name}")


@tickets_group.group("cc")
def cc_group() -> None:
    """The colleagues CC'd on a ticket (they hear of every update)."""


@cc_group.command("add")
@click.argument("number", type=int)
@click.argument("address")
@as_agent
@with_app
def cc_add(app: App, number: int, address: str, actor: str) -> None:
    """CC ADDRESS on the ticket from now on."""
    app.desk.act(number, lambda s, t: actions.add_watcher(s, t, actor, address))
    click.echo(f"ticket #{number}: {address.strip().lower()} is CC'd")


@cc_group.command("remove")
@click.argument("number", type=int)
@click.argument("address")
@as_agent
@with_app
def cc_remove(app: App, number: int, address: str, actor: str) -> None:
    """Stop CC'ing ADDRESS on the ticket."""
    app.desk.act(number, lambda s, t: actions.remove_watcher(s, t, actor, address))
    click.echo(f"ticket #{number}: {address.strip().lower()} is no longer CC'd")


@tickets_group.command("requester")
@click.argument("number", type=int)
@click.argument("address")
@as_agent
@with_app
def tickets_requester(app: App, number: int, address: str, actor: str) -> None:
    """Make ADDRESS the requester; the previous one stays CC'd."""
    app.desk.act(number, lambda s, t: shaping.set_requester(s, t, actor, address))
    click.echo(f"ticket #{number}: requester {address.strip().lower()}")


@tickets_group.command("attachment")
@click.argument("number", type=int)
@click.argument("attachment_id", type=int)
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Default: its file name.")
@with_app
def tickets_attachment(app: App, number: int, attachment_id: int, output: str | None) -> None:
    """Save attachment ATTACHMENT_ID of ticket NUMBER (ids as `tickets show` lists them)."""
    with app.sessions() as session:
        found = queries.attachment(session, number, attachment_id)
    target = Path(output or found["filename"])
    if target.exists() and output is None:
        fail(f"{target} exists; give --output", EX_DATAERR)
    target.write_bytes(BlobStore(app.settings.attachments_dir).get(found["sha256"]))
    click.echo(f"{target} ({found['size']} bytes, {found['content_type']})")


@tickets_group.command("merge")
@click.argument("survivor", type=int)
@click.argument("other", type=int)
@as_agent
@with_app
def tickets_merge(app: App, survivor: int, other: int, actor: str) -> None:
    """Merge ticket OTHER into SURVIVOR: its mails, people and threading move there and
    OTHER is closed with a link; the customers of both are told once."""
    done = app.desk.act(survivor, lambda s, t: shaping.merge(s, t, actor, other))
    _report(survivor, f"#{other} merged into it", done.queued)
