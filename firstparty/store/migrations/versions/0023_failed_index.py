"""deliveries: the failures page from one index (partial on SQLite and PostgreSQL)

Revision ID: 0023_failed_index
Revises: 0022_funnel_results
"""

import sqlalchemy as sa
from alembic import op

revision = "0023_failed_index"
down_revision = "0022_funnel_results"
branch_labels = None
depends_on = None

COLUMNS = ["status", "updated_at", "id", "destination", "last_error"]
FAILED_ONLY = "status = 'failed'"  # models.FAILED_ONLY, as of this revision
LAST_ERROR_CHARS = 512  # models.LAST_ERROR_CHARS


def upgrade() -> None:
    # The failures page sorted every failed row by updated_at and grouped every one by
    # (destination, last_error) reading the table: 86 ms at 1,000,000 events (11,922 failed
    # rows), growing with them. Longer errors are cut first so every entry fits PostgreSQL's
    # B-tree limit.
    deliveries = sa.table("deliveries", sa.column("last_error", sa.Text()))
    op.execute(
        deliveries.update()
        .where(sa.func.length(deliveries.c.last_error) > LAST_ERROR_CHARS)
        .values(last_error=sa.func.substr(deliveries.c.last_error, 1, LAST_ERROR_CHARS))
    )
    op.create_index(
        "ix_deliveries_failed",
        "deliveries",
        COLUMNS,
        sqlite_where=sa.text(FAILED_ONLY),
        postgresql_where=sa.text(FAILED_ONLY),
        mysql_length={"last_error": 191},
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_failed", table_name="deliveries")
