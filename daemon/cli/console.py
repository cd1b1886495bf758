"""`buzon console …`: what ops do for the agents' console: set an agent's password, or
print a one-time sign-in link (before outbound mail is set up, or for an agent whose
mail does not arrive)."""

from __future__ import annotations

import sys

import click

from daemon.cli.common import EX_DATAERR, fail, with_app
from daemon.wiring import App
from tickets.console_auth import create_link, link_url, set_password
from tickets.errors import TicketError
from tickets.models import utcnow


@click.group("console")
def console_group() -> None:
    """The agents' console in the browser: passwords and sign-in links."""


def _agent(app: App, value: str) -> str:
    """A configured agent's address, from their address or name."""
    try:
        address = app.catalogue.agent(value)
    except TicketError as exc:
        fail(str(exc), EX_DATAERR)
    if address not in app.settings.agent_names:
        fail(f"{value!r} is not a configured agent (agents = [...] in the config)", EX_DATAERR)
    return address


@console_group.command("password")
@click.argument("agent")
@with_app
def console_password(app: App, agent: str) -> None:
    """Set AGENT's console password: typed twice at a terminal, else one line on stdin."""
    address = _agent(app, agent)
    if sys.stdin.isatty():
        password = click.prompt(
            f"Password for {address}", hide_input=True, confirmation_prompt=True
        )
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    with app.sessions.begin() as session:
        set_password(session, address, password, utcnow())
    click.echo(f"console password set for {address}")


@console_group.command("link")
@click.argument("agent")
@with_app
def console_link(app: App, agent: str) -> None:
    """Print a one-time sign-in link for AGENT (valid web.sign_in_link_minutes)."""
    address = _agent(app, agent)
    minutes = app.settings.web.sign_in_link_minutes
    with app.sessions.begin() as session:
        token = create_link(session, address, minutes, utcnow())
    click.echo(link_url(app.web_parts.base_url, token))
    click.echo(f"(for {address}; works once, within {minutes:g} minutes)", err=True)
