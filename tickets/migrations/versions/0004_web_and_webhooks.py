"""HTTP API tokens, console sign-in (passwords, one-time links, sessions) and the
webhook deliveries table (issue 16)

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import tickets.models

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

When = tickets.models.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("agent", sa.String(320), nullable=False, index=True),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", When(), nullable=False),
        sa.Column("last_used_at", When(), nullable=True),
        sa.Column("revoked_at", When(), nullable=True),
    )
    op.create_table(
        "agent_passwords",
        sa.Column("agent", sa.String(320), primary_key=True),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("updated_at", When(), nullable=False),
    )
    op.create_table(
        "sign_in_links",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("agent", sa.String(320), nullable=False, index=True),
        sa.Column("created_at", When(), nullable=False),
        sa.Column("expires_at", When(), nullable=False),
        sa.Column("used_at", When(), nullable=True),
    )
    op.create_table(
        "console_sessions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("agent", sa.String(320), nullable=False, index=True),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("created_at", When(), nullable=False),
        sa.Column("expires_at", When(), nullable=False),
        sa.Column("revoked_at", When(), nullable=True),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("hook", sa.String(100), nullable=False),
        sa.Column("event", sa.String(40), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=True, index=True),
        sa.Column("idempotency_key", sa.String(64), nullable=False, unique=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", When(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("claimed_until", When(), nullable=True),
        sa.Column("claimed_by", sa.String(200), nullable=True),
        sa.Column("created_at", When(), nullable=False),
        sa.Column("delivered_at", When(), nullable=True),
    )
    op.create_index(
        "ix_webhook_deliveries_state_next", "webhook_deliveries", ["state", "next_attempt_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_state_next", table_name="webhook_deliveries")
    for table in (
        "webhook_deliveries",
        "console_sessions",
        "sign_in_links",
        "agent_passwords",
        "api_tokens",
    ):
        op.drop_table(table)
