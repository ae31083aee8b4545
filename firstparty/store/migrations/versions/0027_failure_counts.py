"""failure_counts: failed outbox rows by destination and last error, kept as rows move

Revision ID: 0027_failure_counts
Revises: 0026_deliveries_event_pk

The failures page and the replay preview counted every failed row (81 ms at 100,000 failed
rows on SQLite); the outbox now moves these counts in the transactions that move the rows
(delivery/failures.py). The upgrade counts the failed rows stored: one pass over the partial
index ix_deliveries_failed (MySQL and MariaDB: over its full twin). On PostgreSQL it also
indexes the failed rows by destination and id (`ix_deliveries_failed_destination_id`): a
replay's chunk and the page's preview take a destination's first 250 failed rows in id order,
which PostgreSQL read and sorted all of before (the other engines' (destination, status) index
gives that order).
"""

import sqlalchemy as sa
from alembic import op

from firstparty.delivery import failures

revision = "0027_failure_counts"
down_revision = "0026_deliveries_event_pk"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "failure_counts",
        sa.Column("destination", sa.String(64), primary_key=True),
        sa.Column("reason_key", sa.String(64), primary_key=True),
        sa.Column("shard", sa.SmallInteger(), primary_key=True, autoincrement=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sqlite_with_rowid=False,
    )
    failures.backfill(op.get_bind())
    if op.get_bind().dialect.name == "postgresql":
        op.create_index(
            "ix_deliveries_failed_destination_id",
            "deliveries",
            ["destination", "id"],
            postgresql_where=sa.text("status = 'failed'"),
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_deliveries_failed_destination_id", table_name="deliveries")
    op.drop_table("failure_counts")
