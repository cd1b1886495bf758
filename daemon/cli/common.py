"""What every `buzon` command shares: the root group, --config and the App, output as
text or JSON, and exit codes. Only the CLI decides exit codes (sysexits for the MTA
pipe), and only through `fail` here or `sys.exit` in the run commands.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click
from sqlalchemy.exc import SQLAlchemyError

from daemon.config import ConfigError, load_settings
from daemon.logs import configure as configure_logging
from tickets.errors import TicketError, describe
from tickets.listing import parse_duration

if TYPE_CHECKING:
    from daemon.wiring import App

EX_DATAERR = 65
EX_UNAVAILABLE = 69  # an agent's reply was recorded but reaches nobody
EX_TEMPFAIL = 75
EX_CONFIG = 78

F = TypeVar("F", bound=Callable[..., Any])

# --config is checked by `load_settings`, not by click: an unreadable or missing file is
# then a one-line configuration error (78; 75 under the MTA pipe) naming the cause,
# rather than a usage error (2).
CONFIG_PATH = click.Path(readable=False)


def fail(message: str, code: int) -> NoReturn:
    """One line on stderr, then the exit code."""
    click.echo(f"buzon: {message}", err=True)
    sys.exit(code)


def load_app(config: str | None, *, prepare: bool = True, creates_data_dir: bool = True) -> App:
    """The App of `config`. With `creates_data_dir` false (one-shot commands) a data dir
    named by a config file must exist: a relative or mistyped `data_dir` would otherwise
    give the command a new, empty database ("no tickets") instead of the service's."""
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        fail(str(exc), EX_CONFIG)
    if config is not None and not creates_data_dir and not settings.data_dir.is_dir():
        fail(
            f"data_dir {settings.data_dir} (config {config}) does not exist; run this where "
            "buzón runs, fix data_dir, or create it with `buzon db upgrade`",
            EX_CONFIG,
        )
    configure_logging(settings.log.level, settings.log.json_format, one_shot=not creates_data_dir)
    from daemon.wiring import App  # here: `buzon --help` and `--version` do without it

    app = App(settings)
    if prepare:
        try:
            app.prepare()
        except (SQLAlchemyError, OSError) as exc:
            fail(f"database unavailable: {describe(exc).partition(': ')[2]}", EX_TEMPFAIL)
        except ConfigError as exc:  # e.g. a broken template override
            fail(str(exc), EX_CONFIG)
    return app


def root_config() -> str | None:
    """--config given before the command name (`buzon --config F doctor`)."""
    value = click.get_current_context().find_root().params.get("config")
    return str(value) if value else None


def with_app(func: F) -> F:
    """Adds --config to a one-shot command and hands it a ready App (the data dir a
    config names must exist; WARNING and above are logged, so that the command's own
    output and progress bar stay readable)."""
    return _with_app(func, creates_data_dir=False)


def with_service_app(func: F) -> F:
    """`with_app` for the long-lived commands and `db upgrade`: they may create the data
    dir (a first start) and log at the configured level."""
    return _with_app(func, creates_data_dir=True)


def _with_app(func: F, *, creates_data_dir: bool) -> F:
    @click.option(
        "--config",
        "config",
        envvar="BUZON_CONFIG",
        type=CONFIG_PATH,
        help="TOML config file (env BUZON_CONFIG).",
    )
    @functools.wraps(func)
    def wrapper(*args: Any, config: str | None, **kwargs: Any) -> Any:
        app = load_app(config or root_config(), creates_data_dir=creates_data_dir)
        try:
            return func(app, *args, **kwargs)
        except TicketError as exc:
            fail(str(exc), EX_DATAERR)

    return wrapper  # type: ignore[return-value]


def emit(data: Any, as_json: bool, human: Callable[[Any], None]) -> None:
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str))
    else:
        human(data)


def emit_rows(
    rows: list[dict[str, Any]], as_json: bool, line: Callable[[dict[str, Any]], str], none: str
) -> None:
    """A listing: JSON, or one line per row (`none` when there is no row)."""

    def human(items: list[dict[str, Any]]) -> None:
        for item in items:
            click.echo(line(item))
        if not items:
            click.echo(none)

    emit(rows, as_json, human)


class Duration(click.ParamType):  # type: ignore[type-arg]
    """'90m', '2h', '1d' or plain seconds."""

    name = "duration"

    def convert(self, value: Any, param: Any, ctx: Any) -> timedelta:
        if isinstance(value, timedelta):
            return value
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


DURATION = Duration()
