"""Mail in by hand: `buzon ingest` (an MTA pipe, a file, a Maildir/mbox backfill) and
`buzon inbound …` (the stored raw messages: list, reprocess)."""

from __future__ import annotations

import mailbox
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import click

from daemon import operations
from daemon.cli.common import EX_TEMPFAIL, fail, with_app
from daemon.cli.listing import list_command, one_or_every
from daemon.wiring import App
from tickets import queries
from tickets.errors import describe
from tickets.inbox import StoreUnavailable, accept
from tickets.models import RawState


@click.command("ingest")
@click.argument("file", required=False, default="-")
@click.option(
    "--maildir", type=click.Path(exists=True, file_okay=False), help="Backfill a Maildir."
)
@click.option("--mbox", type=click.Path(exists=True, dir_okay=False), help="Backfill an mbox file.")
@click.option(
    "--notify",
    is_flag=True,
    help="Backfill: mail customers as for new mail (default: tell nobody of past mail).",
)
@with_app
def ingest(app: App, file: str, maildir: str | None, mbox: str | None, notify: bool) -> None:
    """Ingest one mail from FILE or stdin (an MTA pipe), or backfill a Maildir/mbox.

    Exit 75 (EX_TEMPFAIL) when the mail could not be stored, so the MTA retries.
    """
    if maildir or mbox:
        box = mailbox.Maildir(maildir, create=False) if maildir else mailbox.mbox(mbox or "")
        _backfill(app, box, notify)
        return
    try:
        raw = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror or exc}", EX_TEMPFAIL)
    try:
        raw_id = accept(app.sessions, raw, "pipe", {"file": None if file == "-" else file})
    except StoreUnavailable as exc:
        fail(f"could not store the message: {exc}", EX_TEMPFAIL)
    del raw  # stored: a big mail's bytes are not held twice while it is processed
    # Stored: from here on the MTA must get 0, or it would deliver the mail again; what
    # is not processed now stays pending for the ingest worker or `inbound reprocess`.
    try:
        outcome = app.desk.ingest(raw_id)
    except Exception as exc:  # noqa: BLE001 - stored: the MTA must not retry nor bounce it
        # The mail is committed; a worker (or `inbound reprocess`) processes it later.
        click.echo(f"stored as raw message {raw_id}; processing deferred ({describe(exc)})")
        return
    ticket = f" ticket #{outcome.ticket_id}" if outcome.ticket_id else ""
    click.echo(
        f"raw message {raw_id}: {outcome.state}{ticket}"
        + (f" ({outcome.reason})" if outcome.reason else "")
    )


def _backfill(app: App, box: mailbox.Mailbox[Any], notify: bool) -> None:
    states: Counter[str] = Counter()
    keys = list(box.keys())
    with click.progressbar(keys, label="ingesting", file=sys.stderr) as bar:
        for key in bar:
            raw = box.get_bytes(key)
            try:
                envelope = {"key": str(key), "notify": notify}
                raw_id = accept(app.sessions, raw, "backfill", envelope)
            except StoreUnavailable as exc:
                fail(f"could not store message {key}: {exc}", EX_TEMPFAIL)
            states[operations.process(app.desk, raw_id)] += 1
    summary = ", ".join(f"{count} {state}" for state, count in sorted(states.items()))
    click.echo(f"{len(keys)} messages: {summary or 'nothing to do'}")


@click.group("inbound")
def inbound_group() -> None:
    """The stored raw messages (the intake queue)."""


def _raw_line(r: dict[str, Any]) -> str:
    return (
        f"{r['id']:<7} {r['state']:<12} {r['source']:<8} {r['size']:>9}B "
        f"ticket {r['ticket'] or '-':<6} {r['reason'] or ''}"
    )


list_command(
    inbound_group,
    "Raw messages, newest first.",
    states=[s.value for s in RawState],
    rows=lambda session, state, limit: queries.list_raw(session, state=state, limit=limit),
    line=_raw_line,
    none="no messages",
)


@inbound_group.command("reprocess")
@click.argument("raw_id", type=int, required=False)
@click.option("--failed", is_flag=True, help="Every failed and quarantined message.")
@with_app
def inbound_reprocess(app: App, raw_id: int | None, failed: bool) -> None:
    """Process a stored message again (after a fix, or once the cause is gone)."""
    one_or_every(raw_id, failed, "give a RAW_ID or --failed (not both)")
    states = operations.reprocess(app.sessions, app.desk, raw_id)
    click.echo(
        f"{states.total()} reprocessed: "
        + (", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "none")
    )


@inbound_group.command("release")
@click.argument("raw_ids", type=int, nargs=-1, required=True)
@with_app
def inbound_release(app: App, raw_ids: tuple[int, ...]) -> None:
    """Not spam after all: turn the stored message(s) into tickets as if no filter had
    flagged them."""
    for raw_id, outcome in operations.release(app.sessions, app.desk, raw_ids):
        ticket = f" ticket #{outcome.ticket_id}" if outcome.ticket_id else ""
        click.echo(f"raw message {raw_id}: {outcome.state}{ticket}")
