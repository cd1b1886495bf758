"""outbox.plan: a mail planned in the transaction, rendered and serialised at delivery
(issue 15); outbox.raw becomes optional (rows written before keep their bytes)

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_on_sqlite(planned=True)
        return
    op.add_column("outbox", sa.Column("plan", sa.JSON(), nullable=True))
    op.alter_column("outbox", "raw", existing_type=sa.LargeBinary(), nullable=True)


def downgrade() -> None:
    # An unsent planned row has no bytes to go back with: refuse rather than lose mail
    # (deliver or discard it first). A sent one stays as history, with empty bytes.
    waiting = op.get_bind().scalar(
        sa.text("SELECT count(*) FROM outbox WHERE raw IS NULL AND state != 'sent'")
    )
    if waiting:
        raise RuntimeError(f"{waiting} planned outbox rows are not sent yet: deliver them first")
    op.execute(sa.text("UPDATE outbox SET raw = :empty WHERE raw IS NULL").bindparams(empty=b""))
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_on_sqlite(planned=False)
        return
    op.alter_column("outbox", "raw", existing_type=sa.LargeBinary(), nullable=False)
    op.drop_column("outbox", "plan")


def _rebuild_on_sqlite(planned: bool) -> None:
    """SQLite changes a column only by rebuilding the table. Alembic's batch mode copies
    first and drops the old table after, which outbox_recipients rows refer to: with
    foreign keys on (buzón's engines) that drop fails. Here the rows wait in a copy while
    the table is dropped and made anew (as it was, but for `raw` and `plan`), with the
    check deferred to the commit; putting the rows back (same ids) satisfies it."""
    bind = op.get_bind()
    found = sa.inspect(bind)
    old = sa.Table("outbox", sa.MetaData(), autoload_with=bind)
    columns = [
        sa.Column(c.name, c.type, nullable=planned if c.name == "raw" else c.nullable,
                  primary_key=c.primary_key)
        for c in old.columns
        if c.name != "plan"
    ]  # fmt: skip
    names = ", ".join(c.name for c in columns)
    if planned:
        columns.append(sa.Column("plan", sa.JSON(), nullable=True))
    keys = [
        sa.ForeignKeyConstraint(fk["constrained_columns"],
                                [f"{fk['referred_table']}.{c}" for c in fk["referred_columns"]])
        for fk in found.get_foreign_keys("outbox")
    ]  # fmt: skip
    unique = [
        sa.UniqueConstraint(*u["column_names"]) for u in found.get_unique_constraints("outbox")
    ]
    indexes = found.get_indexes("outbox")
    op.execute("PRAGMA defer_foreign_keys = ON")  # until this transaction ends
    op.execute(f"CREATE TEMP TABLE outbox_0005 AS SELECT {names} FROM outbox")
    op.drop_table("outbox")
    op.create_table("outbox", *columns, *keys, *unique)
    for index in indexes:  # plain column indexes (an expression would have a None name)
        names_of = [c for c in index["column_names"] if c is not None]
        op.create_index(index["name"], "outbox", names_of, unique=index["unique"])
    op.execute(f"INSERT INTO outbox ({names}) SELECT {names} FROM outbox_0005")
    op.execute("DROP TABLE outbox_0005")
