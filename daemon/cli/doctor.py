"""`buzon doctor`: checks what the service depends on, one line per check.

Each line reads "<check>: ok ..." or "<check>: FAIL: <reason>"; the exit status is 0 when
every check passed, 1 otherwise (78 when the configuration itself cannot be loaded).
Reasons are built from exception types and server replies, never from passwords or
tokens, so the output can be pasted into a ticket.
"""

from __future__ import annotations

import smtplib
import sys
import tempfile
from collections.abc import Callable, Iterator
from datetime import timedelta
from functools import partial
from pathlib import Path

import click

from daemon.cli.common import CONFIG_PATH, EX_CONFIG, root_config
from daemon.config import ConfigError, ImapMailbox, load_settings
from daemon.intake.imap_auth import credentials_for
from daemon.intake.imap_poller import connect_factory, describe, mailbox_status
from daemon.wiring import App
from notifier.errors import NotifierError
from tickets.db import schema_is_current
from tickets.models import RawState
from tickets.queries import queue_figures

Check = tuple[str, Callable[[], str]]  # name, and a callable returning the "ok" detail


class Failed(Exception):
    """A check failed; the message is the reason shown after FAIL."""


@click.command("doctor")
@click.option("--config", envvar="BUZON_CONFIG", type=CONFIG_PATH)
def doctor(config: str | None) -> None:
    """Check config, database, mailboxes, relay and data dir; exit 0 when all are ok."""
    ctx_config = root_config()
    try:
        settings = load_settings(config or ctx_config)
    except ConfigError as exc:
        click.echo(f"config: FAIL: {exc}")
        sys.exit(EX_CONFIG)
    click.echo(f"config: ok ({config or ctx_config or 'defaults and BUZON_* variables'})")
    app = App(settings)
    # With a config file, a missing data dir is a finding, not something to create: the
    # service would otherwise look healthy on a new, empty database (see load_app).
    creates = (config or ctx_config) is None
    try:
        ok = all([_report(name, check) for name, check in _checks(app, creates)])
    finally:
        if "engine" in vars(app):  # built by a check; building it now would mkdir for SQLite
            app.engine.dispose()
    sys.exit(0 if ok else 1)


def _report(name: str, check: Callable[[], str]) -> bool:
    try:
        detail = check()
    except Failed as exc:
        click.echo(f"{name}: FAIL: {exc}")
        return False
    except Exception as exc:  # a doctor reports every failure, whatever raised it
        click.echo(f"{name}: FAIL: {describe(exc)}")
        return False
    click.echo(f"{name}: ok" + (f" ({detail})" if detail else ""))
    return True


def _checks(app: App, creates_data_dir: bool = True) -> Iterator[Check]:
    # Decided before any check runs: opening SQLite would create the directory.
    missing = not creates_data_dir and not app.settings.data_dir.is_dir()
    yield "data_dir", lambda: _writable(app.settings.data_dir, create=not missing)
    database_ok = [False]

    def database() -> str:
        if missing and app.settings.database_url is None:
            raise Failed("skipped: data_dir does not exist")
        detail = _database(app)
        database_ok[0] = True
        return detail

    yield "database", database
    for mailbox in app.settings.imap.mailboxes:
        yield f"imap {mailbox.name}", partial(_imap, app, mailbox, database_ok)
    if app.settings.outbound.relay is None:
        yield "outbound maildir", partial(_maildir, app, missing)
    else:
        yield f"relay {app.settings.outbound.relay}", lambda: _relay(app)
    yield "queues", lambda: _queues(app) if database_ok[0] else _skipped()


def _maildir(app: App, data_dir_missing: bool) -> str:
    """The local outbox: made complete (tmp/ new/ cur/) as delivery would, but never
    inside a data dir that the config names and that does not exist."""
    if data_dir_missing:
        raise Failed("skipped: data_dir does not exist")
    return _relay(app) and _writable(app.settings.outbox_maildir)


def _skipped() -> str:
    raise Failed("skipped: the database is unavailable")


def _writable(path: Path, *, create: bool = True) -> str:
    if not create and not path.is_dir():
        raise Failed(f"{path} does not exist (create it with `buzon db upgrade`)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".doctor-"):
            pass
    except OSError as exc:
        raise Failed(f"{path} not writable: {exc.strerror or exc}") from None
    return str(path)


def _database(app: App) -> str:
    where = app.settings.db_url.split("@")[-1]  # no user:password in the output
    try:
        current = schema_is_current(app.engine)
    except Exception as exc:
        reason = describe(exc).partition(": ")[2] or type(exc).__name__
        raise Failed(f"{where}: {reason}") from None
    if not current:
        raise Failed(f"{where}: schema not current (run `buzon db upgrade`)")
    return where


def _imap(app: App, mailbox: ImapMailbox, database_ok: list[bool]) -> str:
    """Connect, log in and select, as the poller does; then what the store knows."""
    credentials = credentials_for(mailbox, app.settings.data_dir)
    try:
        with connect_factory(mailbox)() as client:
            credentials.login(client)
            client.select_folder(mailbox.folder, readonly=True)
    except Exception as exc:
        raise Failed(f"{mailbox.user}@{mailbox.host}:{mailbox.port}: {describe(exc)}") from None
    detail = f"{mailbox.host}:{mailbox.port} {mailbox.folder}"
    if database_ok[0]:  # the store answers: show what it knows of the mailbox
        status = mailbox_status(app.sessions, [mailbox])[0]
        detail += f"; last successful poll {_age(status['seconds_since_success'])}"
        if mailbox.oauth2_token_command or mailbox.oauth2_token_file:
            detail += f"; token age {_age(status['token_age_seconds'])}"
    return detail


def _age(seconds: float | None) -> str:
    return "never" if seconds is None else f"{timedelta(seconds=round(seconds))} ago"


def _relay(app: App) -> str:
    """Connect, EHLO, STARTTLS and AUTH as configured; nothing is sent."""
    out = app.settings.outbound
    try:
        app.transport().check()
    except smtplib.SMTPAuthenticationError as exc:
        raise Failed(f"relay refused the login of {out.user}: {exc.smtp_code}") from None
    except NotifierError as exc:
        raise Failed(str(exc)) from None
    except (OSError, smtplib.SMTPException) as exc:
        raise Failed(f"{type(exc).__name__}: {exc}"[:200]) from None
    return f"{out.security}" + (", login ok" if out.user else "")


def _queues(app: App) -> str:
    with app.sessions() as session:
        figures = queue_figures(session)
    raw, outbox = figures["raw"], figures["outbox"]
    parts = [f"{state} {raw.get(state, 0)}" for state in _RAW_STATES]
    parts.append(f"outbox {', '.join(f'{s} {n}' for s, n in sorted(outbox.items())) or 'empty'}")
    return "; ".join(parts)


_RAW_STATES = (RawState.PENDING, RawState.FAILED, RawState.QUARANTINED)
