"""`buzon agents token …`: the agents' API tokens (create, list, revoke)."""

from __future__ import annotations

from typing import Any

import click

from daemon.cli.common import emit_rows, with_app
from daemon.wiring import App
from tickets import tokens
from tickets.models import utcnow


@click.group("agents")
def agents_group() -> None:
    """The configured agents and their API tokens."""


@agents_group.group("token")
def token_group() -> None:
    """API tokens: each request made with one is recorded as its agent's."""


@token_group.command("create")
@click.argument("agent")
@click.option("--label", default="", help="What the token is for (e.g. crm, dashboard).")
@with_app
def token_create(app: App, agent: str, label: str) -> None:
    """A new token for AGENT (a configured agent's address or name), printed once."""
    with app.sessions.begin() as session:
        made = tokens.create(session, app.catalogue, agent, label, utcnow())
    click.echo(made.token)
    click.echo(
        f"API token {made.id} for {made.agent}: keep it now, it will not be shown again",
        err=True,
    )


@token_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@with_app
def token_list(app: App, as_json: bool) -> None:
    """Every token (never the secret itself), newest first."""
    with app.sessions() as session:
        rows = tokens.list_tokens(session)
    emit_rows(rows, as_json, _token_line, "no tokens")


def _token_line(t: dict[str, Any]) -> str:
    state = f"revoked {t['revoked_at']:%Y-%m-%d %H:%M}" if t["revoked_at"] else "active"
    used = f"{t['last_used_at']:%Y-%m-%d %H:%M}" if t["last_used_at"] else "never"
    return f"{t['id']:<5} {t['agent']:<30} {state:<24} used {used:<16} {t['label']}"


@token_group.command("revoke")
@click.argument("token_id", type=int)
@with_app
def token_revoke(app: App, token_id: int) -> None:
    """Revoke token TOKEN_ID for good (ids as `agents token list` shows them)."""
    with app.sessions.begin() as session:
        agent = tokens.revoke(session, token_id, utcnow())
    click.echo(f"API token {token_id} of {agent}: revoked")
