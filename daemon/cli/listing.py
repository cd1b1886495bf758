"""The layout the queue commands share (`inbound`, `webhooks`, `outbox`, `addresses`):
`… list [--state S] [--limit N] [--json]`, one line per row, and `… retry|reprocess ID`
or the whole lot by a flag."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click
from sqlalchemy.orm import Session, sessionmaker

from daemon.cli.common import emit_rows

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


def one_or_every(one: int | None, every: bool, usage: str) -> None:
    """A retry names one row or, by a flag, every row it applies to: not neither, not both."""
    if (one is None) == (not every):
        raise click.UsageError(usage)
