"""daily counts for the reports (event_rollups, delivery_rollups), counted by 0012_reports;
list indexes ordered by id

Revision ID: 0009_rollups
Revises: 0008_destinations
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_rollups"
down_revision = "0008_destinations"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "event_rollups",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("shard", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("bot", sa.Boolean(), nullable=False),
        sa.Column("converted", sa.Boolean(), nullable=False),
        sa.Column("utm_source", sa.String(length=255), nullable=False),
        sa.Column("utm_medium", sa.String(length=255), nullable=False),
        sa.Column("utm_campaign", sa.String(length=255), nullable=False),
        sa.Column("click_kinds", sa.String(length=128), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("day", "key", "shard", name="pk_event_rollups"),
    )
    op.create_table(
        "delivery_rollups",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("destination", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("shard", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "day", "destination", "status", "shard", name="pk_delivery_rollups"
        ),
    )
    # List pages newest first through one index, whatever the filter.
    op.create_index("ix_events_name_id", "events", ["name", "id"])
    op.drop_index("ix_events_name", table_name="events")
    op.create_index("ix_tracks_status_id", "tracks", ["status", "id"])
    op.create_index("ix_tracks_destination_status_id", "tracks", ["destination", "status", "id"])
    op.drop_index("ix_tracks_destination_status", table_name="tracks")
    # The stored events and outbox rows are counted by 0012_reports, by hour (the counting code
    # writes the hourly tables it makes).


def downgrade() -> None:
    op.create_index("ix_tracks_destination_status", "tracks", ["destination", "status"])
    op.drop_index("ix_tracks_destination_status_id", table_name="tracks")
    op.drop_index("ix_tracks_status_id", table_name="tracks")
    op.create_index("ix_events_name", "events", ["name"])
    op.drop_index("ix_events_name_id", table_name="events")
    op.drop_table("delivery_rollups")
    op.drop_table("event_rollups")
