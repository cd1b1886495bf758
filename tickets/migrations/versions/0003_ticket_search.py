"""full-text search over tickets (FTS5 on SQLite, tsvector on PostgreSQL); merged
tickets; the queue (support address) of a ticket

Revision ID: 0003
Revises: b17_ingest_retry
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.orm import Session

revision: str = "0003"
down_revision: str | None = "b17_ingest_retry"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tickets") as batch:
        batch.add_column(sa.Column("merged_into_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("queue_address", sa.String(length=320), nullable=True))
        batch.add_column(sa.Column("tags", sa.JSON(), nullable=False, server_default="[]"))
        batch.create_foreign_key("fk_tickets_merged_into", "tickets", ["merged_into_id"], ["id"])
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute(
            "CREATE TABLE ticket_search (ticket_id INTEGER PRIMARY KEY "
            "REFERENCES tickets (id) ON DELETE CASCADE, body TEXT NOT NULL)"
        )
        op.execute(
            "CREATE INDEX ix_ticket_search_body ON ticket_search "
            "USING gin (to_tsvector('spanish', body))"
        )
    else:
        op.execute("CREATE VIRTUAL TABLE ticket_search USING fts5(body, tokenize='unicode61')")
    _index_existing(Session(bind=bind))


def _index_existing(session: Session) -> None:
    from sqlalchemy import select

    from tickets import search
    from tickets.models import Ticket

    search.index(session, list(session.scalars(select(Ticket.id))))
    session.flush()


def downgrade() -> None:
    op.execute("DROP TABLE ticket_search")
    with op.batch_alter_table("tickets") as batch:
        batch.drop_constraint("fk_tickets_merged_into", type_="foreignkey")
        batch.drop_column("merged_into_id")
        batch.drop_column("queue_address")
        batch.drop_column("tags")
