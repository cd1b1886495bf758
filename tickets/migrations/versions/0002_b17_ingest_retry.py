"""ingest retries (issue 17): raw_messages.retries and retry_at; articles.from_addr index

Revision ID: b17_ingest_retry
Revises: 0001
Create Date: 2026-12-01 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import tickets.models

revision: str = "b17_ingest_retry"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("raw_messages") as batch:
        batch.add_column(sa.Column("retries", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("retry_at", tickets.models.UTCDateTime(), nullable=True))
    op.create_index("ix_articles_from_addr", "articles", ["from_addr"])


def downgrade() -> None:
    op.drop_index("ix_articles_from_addr", table_name="articles")
    with op.batch_alter_table("raw_messages") as batch:
        batch.drop_column("retry_at")
        batch.drop_column("retries")
