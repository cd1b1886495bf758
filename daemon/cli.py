"""The `buzon` command. Only this module decides exit codes (sysexits for the MTA pipe)."""

from __future__ import annotations

import functools
import json
import mailbox
import sys
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import click
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from daemon.app import App
from daemon.config import ConfigError, load_settings
from daemon.logs import configure as configure_logging
from daemon.ops import http_option, run_service
from tickets import queries
from tickets.errors import TicketError
from tickets.ingest import StoreUnavailable, accept, process, reset_for_reprocess
from tickets.lifecycle import time_spent
from tickets.models import utcnow

EX_DATAERR = 65
EX_SOFTWARE = 70
EX_TEMPFAIL = 75
EX_CONFIG = 78

F = TypeVar("F", bound=Callable[..., Any])


def _fail(message: str, code: int) -> None:
    click.echo(f"buzon: {message}", err=True)
    sys.exit(code)


def _load_app(config: str | None, *, prepare: bool = True) -> App:
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        _fail(str(exc), EX_CONFIG)
    configure_logging(settings.log.level, settings.log.json_format)
    app = App(settings)
    if prepare:
        try:
            app.prepare()
        except (SQLAlchemyError, OSError) as exc:
            cause = getattr(exc, "orig", None) or exc
            _fail(f"database unavailable: {str(cause).splitlines()[0]}", EX_TEMPFAIL)
        except ConfigError as exc:  # e.g. a broken template override
            _fail(str(exc), EX_CONFIG)
    return app


def with_app(func: F) -> F:
    """Adds --config to a command and hands it a ready App."""

    @click.option(
        "--config",
        "config",
        envvar="BUZON_CONFIG",
        type=click.Path(dir_okay=False),
        help="TOML config file (env BUZON_CONFIG).",
    )
    @functools.wraps(func)
    def wrapper(*args: Any, config: str | None, **kwargs: Any) -> Any:
        ctx_config = click.get_current_context().find_root().params.get("config")
        app = _load_app(config or ctx_config)
        try:
            return func(app, *args, **kwargs)
        except TicketError as exc:
            _fail(str(exc), EX_DATAERR)

    return wrapper  # type: ignore[return-value]


def _emit(data: Any, as_json: bool, human: Callable[[Any], None]) -> None:
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str))
    else:
        human(data)


class Duration(click.ParamType):
    """'90m', '2h', '1d' or plain seconds."""

    name = "duration"
    _units = {"s": 1, "m": 60, "h": 3600, "d": 86400}

    def convert(self, value: Any, param: Any, ctx: Any) -> timedelta:
        if isinstance(value, timedelta):
            return value
        text = str(value).strip().lower()
        unit = self._units.get(text[-1:], None)
        try:
            amount = float(text[:-1] if unit else text)
        except ValueError:
            self.fail(f"{value!r} is not a duration like 30m, 2h or 1d", param, ctx)
        return timedelta(seconds=amount * (unit or 1))


DURATION = Duration()


@click.group()
@click.option("--config", envvar="BUZON_CONFIG", type=click.Path(dir_okay=False), hidden=True)
def main(config: str | None) -> None:
    """buzón: email-to-ticket daemon."""


# --- config, db ---------------------------------------------------------------------------


@main.group("config")
def config_group() -> None:
    """Configuration."""


@config_group.command("check")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.option("--config", envvar="BUZON_CONFIG", type=click.Path(dir_okay=False))
def config_check(file: str | None, config: str | None) -> None:
    """Validate a config file (and BUZON_* variables); print the effective settings."""
    try:
        settings = load_settings(file or config)
    except ConfigError as exc:
        _fail(str(exc), EX_CONFIG)
    click.echo(
        f"ok: database {settings.db_url.split('@')[-1]}, "
        f"support {', '.join(settings.support_addresses)}"
    )


@main.group("db")
def db_group() -> None:
    """Database schema."""


@db_group.command("upgrade")
@with_app
def db_upgrade(app: App) -> None:
    """Apply every pending migration (also done at every start)."""
    click.echo("schema is current")


# --- ingest -------------------------------------------------------------------------------


@main.command("ingest")
@click.argument("file", required=False, default="-")
@click.option(
    "--maildir", type=click.Path(exists=True, file_okay=False), help="Backfill a Maildir."
)
@click.option("--mbox", type=click.Path(exists=True, dir_okay=False), help="Backfill an mbox file.")
@with_app
def ingest(app: App, file: str, maildir: str | None, mbox: str | None) -> None:
    """Ingest one mail from FILE or stdin (an MTA pipe), or backfill a Maildir/mbox.

    Exit 75 (EX_TEMPFAIL) when the mail could not be stored, so the MTA retries.
    """
    if maildir or mbox:
        box = mailbox.Maildir(maildir, create=False) if maildir else mailbox.mbox(mbox or "")
        _backfill(app, box)
        return
    raw = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    try:
        raw_id = accept(app.sessions, raw, "pipe", {"file": None if file == "-" else file})
    except StoreUnavailable as exc:
        _fail(f"could not store the message: {exc}", EX_TEMPFAIL)
    try:
        outcome = process(app.sessions, app.policy, raw_id, app.after_apply)
    except OperationalError:
        click.echo(f"stored as raw message {raw_id}; processing deferred (database busy)")
        return
    ticket = f" ticket #{outcome.ticket_id}" if outcome.ticket_id else ""
    click.echo(
        f"raw message {raw_id}: {outcome.state}{ticket}"
        + (f" ({outcome.reason})" if outcome.reason else "")
    )


def _backfill(app: App, box: mailbox.Mailbox[Any]) -> None:
    states: Counter[str] = Counter()
    keys = list(box.keys())
    with click.progressbar(keys, label="ingesting", file=sys.stderr) as bar:
        for key in bar:
            raw = box.get_bytes(key)
            try:
                raw_id = accept(app.sessions, raw, "backfill", {"key": str(key)})
            except StoreUnavailable as exc:
                _fail(f"could not store message {key}: {exc}", EX_TEMPFAIL)
            states[process(app.sessions, app.policy, raw_id, app.after_apply).state] += 1
    summary = ", ".join(f"{count} {state}" for state, count in sorted(states.items()))
    click.echo(f"{len(keys)} messages: {summary or 'nothing to do'}")


# --- tickets ------------------------------------------------------------------------------


@main.group("tickets")
def tickets_group() -> None:
    """List and show tickets."""


@tickets_group.command("list")
@click.option("--status", help="Only this status (new, in_progress, ...).")
@click.option("--level", type=click.IntRange(1, 2))
@click.option("--requester", help="Requester's address.")
@click.option("--breached", is_flag=True, help="Only tickets past an SLA due time.")
@click.option("--due-within", type=DURATION, help="Only tickets due within e.g. 2h, 30m, 1d.")
@click.option("--limit", default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@with_app
def tickets_list(
    app: App,
    status: str | None,
    level: int | None,
    requester: str | None,
    breached: bool,
    due_within: timedelta | None,
    limit: int,
    as_json: bool,
) -> None:
    """Tickets, newest first (by due time with --breached / --due-within)."""
    due_before = None
    if breached or due_within is not None:
        due_before = utcnow() + (due_within or timedelta(0))
    with app.sessions() as session:
        rows = queries.list_tickets(
            session,
            status=status,
            level=level,
            requester=requester,
            due_before=due_before,
            limit=limit,
        )

    def human(items: list[dict[str, Any]]) -> None:
        for t in items:
            click.echo(
                f"#{t['number']:<6} {t['status']:<20} L{t['level']} {t['priority']} "
                f"{t['requester']:<30} {t['subject'][:60]}"
            )
        if not items:
            click.echo("no tickets")

    _emit(rows, as_json, human)


@tickets_group.command("show")
@click.argument("number", type=int)
@click.option("--json", "as_json", is_flag=True)
@with_app
def tickets_show(app: App, number: int, as_json: bool) -> None:
    """One ticket: thread, participants, attachments and history."""
    with app.sessions() as session:
        data = queries.ticket_detail(session, number)
    spent = time_spent(
        data["created_at"], [(e["at"], e["field"], e["new"]) for e in data["events"]], utcnow()
    )
    data["time_by_level"] = {str(k): round(v) for k, v in sorted(spent.by_level.items())}
    data["time_by_team"] = {k or "-": round(v) for k, v in sorted(spent.by_team.items())}
    _emit(data, as_json, _print_ticket)


def _print_ticket(t: dict[str, Any]) -> None:
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
    click.echo("participants:")
    for p in t["participants"]:
        click.echo(f"  {p['role']:<10} {p['email']}")
    click.echo("thread:")
    for a in t["articles"]:
        click.echo(f"  [{a['id']}] {a['created_at']} {a['kind']} from {a['from'] or a['author']}")
        for line in (a["new_text"] or "").strip().splitlines()[:20]:
            click.echo(f"      {line}")
        for f in a["attachments"]:
            click.echo(f"      📎 {f['filename']} ({f['content_type']}, {f['size']} bytes)")
    click.echo("history:")
    for e in t["events"]:
        change = f" {e['field']}: {e['old'] or '-'} → {e['new'] or '-'}" if e["field"] else ""
        why = "; ".join(f"{k} {e['data'][k]}" for k in ("type", "reason", "note") if k in e["data"])
        why = f" ({why})" if why else ""
        click.echo(f"  {e['at']} {e['kind']}{change} by {e['actor']}{why}")
    spent = [f"level {k} {_hm(v)}" for k, v in t["time_by_level"].items()]
    spent += [f"team {k} {_hm(v)}" for k, v in t["time_by_team"].items()]
    click.echo("time open (h:mm): " + "  ".join(spent))


def _hm(seconds: float) -> str:
    return f"{int(seconds) // 3600}:{int(seconds) % 3600 // 60:02d}"


# --- inbound ------------------------------------------------------------------------------


@main.group("inbound")
def inbound_group() -> None:
    """The stored raw messages (the intake queue)."""


@inbound_group.command("list")
@click.option(
    "--state",
    type=click.Choice(["pending", "processing", "processed", "ignored", "failed", "quarantined"]),
)
@click.option("--limit", default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@with_app
def inbound_list(app: App, state: str | None, limit: int, as_json: bool) -> None:
    """Raw messages, newest first."""
    with app.sessions() as session:
        rows = queries.list_raw(session, state=state, limit=limit)

    def human(items: list[dict[str, Any]]) -> None:
        for r in items:
            click.echo(
                f"{r['id']:<7} {r['state']:<12} {r['source']:<8} {r['size']:>9}B "
                f"ticket {r['ticket'] or '-':<6} {r['reason'] or ''}"
            )
        if not items:
            click.echo("no messages")

    _emit(rows, as_json, human)


@inbound_group.command("reprocess")
@click.argument("raw_id", type=int, required=False)
@click.option("--failed", is_flag=True, help="Every failed and quarantined message.")
@with_app
def inbound_reprocess(app: App, raw_id: int | None, failed: bool) -> None:
    """Process a stored message again (after a fix, or once the cause is gone)."""
    if raw_id is None and not failed:
        raise click.UsageError("give a RAW_ID or --failed")
    with app.sessions() as session:
        ids = [raw_id] if raw_id is not None else queries.failed_raw_ids(session)
    reset_for_reprocess(app.sessions, ids)
    states: Counter[str] = Counter()
    for one in ids:
        states[process(app.sessions, app.policy, one, app.after_apply).state] += 1
    click.echo(
        f"{len(ids)} reprocessed: "
        + (", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "none")
    )


# --- running ------------------------------------------------------------------------------


@main.command("run")
@http_option
@with_app
def run(app: App, http: str | None) -> None:
    """Run every configured component in one process until SIGTERM."""
    from daemon.components import all_components

    run_service(app, lambda: all_components(app), http)


# The component commands live in their own modules; importing them registers them on `main`.
from daemon import agent_cli, doctor, imap_cli, scheduler_cli, sla_cli, smtp_cli  # noqa: E402, F401
