"""daily event counts for the reports (event_rollups), counted from the stored events

Revision ID: 0009_rollups
Revises: 0008_destinations
"""

import sqlalchemy as sa
from alembic import op

from firstparty.reports import rollups

revision = "0009_rollups"
down_revision = "0008_destinations"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "event_rollups",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("bot", sa.Boolean(), nullable=False),
        sa.Column("converted", sa.Boolean(), nullable=False),
        sa.Column("utm_source", sa.String(length=255), nullable=False),
        sa.Column("utm_medium", sa.String(length=255), nullable=False),
        sa.Column("utm_campaign", sa.String(length=255), nullable=False),
        sa.Column("click_kinds", sa.String(length=64), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("day", "key", name="pk_event_rollups"),
    )
    # The delivery health report reads the last days' outbox rows by creation time.
    op.create_index(
        "ix_deliveries_created_at_destination_status",
        "deliveries",
        ["created_at", "destination", "status"],
    )
    rollups.backfill(op.get_bind())


def downgrade() -> None:
    op.drop_index("ix_deliveries_created_at_destination_status", table_name="deliveries")
    op.drop_table("event_rollups")
