"""Running a long-lived command as a service: the --http option, the HTTP endpoint next to
the components, and one line + exit 78 for any configuration error found while wiring."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click

from daemon.app import App
from daemon.config import ConfigError
from daemon.health import http_server
from daemon.service import Component, serve

F = TypeVar("F", bound=Callable[..., Any])

EX_CONFIG = 78  # the same sysexits code as daemon.cli (which imports this module lazily)


def http_option(func: F) -> F:
    """Adds --http HOST:PORT to a long-running command."""
    return click.option(
        "--http",
        "http",
        metavar="HOST:PORT",
        help="Serve /healthz /readyz /metrics here (overrides http.listen; "
        "env BUZON_HTTP__LISTEN). Each process of a split deployment needs its own port.",
    )(func)


def run_service(app: App, build: Callable[[], dict[str, Component]], http: str | None) -> NoReturn:
    """Build the components (a bad TLS certificate, token file or busy HTTP port is a
    ConfigError: one line, exit 78), add the HTTP endpoint, serve until SIGTERM."""
    try:
        components = build()
        server = http_server(app, http)
    except ConfigError as exc:
        click.echo(f"buzon: {exc}", err=True)
        sys.exit(EX_CONFIG)
    if server is not None:
        components = {**components, "http": server.run}
    sys.exit(asyncio.run(serve(components)))
