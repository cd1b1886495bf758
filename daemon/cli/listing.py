"""The layout the queue commands share (`inbound`, `webhooks`, `outbox`, `addresses`):
`… list [--state S] [--limit N] [--json]`, one line per row, and `… retry|reprocess ID`
or the whole lot by a flag."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import click
from sqlalchemy.orm import Session, sessionmaker

from daemon.cli.common import emit_rows, with_app

if TYPE_CHECKING:
    from daemon.wiring import App

F = TypeVar("F", bound=Callable[..., Any])


def list_options(states: Sequence[str] = (), *, limit: int = 100) -> Callable[[F], F]:
    """--state (when the rows have states), --limit and --json of a `… list` command."""

    def decorate(func: F) -> F:
        func = click.option("--json", "as_json", is_flag=True)(func)
        func = click.option("--limit", default=limit, show_default=True)(func)
        if states:
            func = click.option("--state", type=click.Choice(list(states)))(func)
        return func

    return decorate


def show(
    sessions: sessionmaker[Session],
    rows: Callable[[Session], list[dict[str, Any]]],
    as_json: bool,
    line: Callable[[dict[str, Any]], str],
    none: str,
) -> None:
    """Read the rows in one session, then print them (JSON, or a line each)."""
    with sessions() as session:
        found = rows(session)
    emit_rows(found, as_json, line, none)


# A queue's rows: (session, the state asked for or None, limit) -> rows, newest first.
Rows = Callable[[Session, str | None, int], list[dict[str, Any]]]


def list_command(
    group: click.Group,
    doc: str,
    *,
    states: Sequence[str],
    rows: Rows,
    line: Callable[[dict[str, Any]], str],
    none: str,
) -> None:
    """Add `list [--state S] [--limit N] [--json]` to `group`."""

    @group.command("list", help=doc)
    @list_options(states)
    @with_app
    def listing(app: App, state: str | None, limit: int, as_json: bool) -> None:
        show(app.sessions, lambda session: rows(session, state, limit), as_json, line, none)


def one_or_every(one: int | None, every: bool, usage: str) -> None:
    """A retry names one row or, by a flag, every row it applies to: not neither, not both."""
    if (one is None) == (not every):
        raise click.UsageError(usage)
