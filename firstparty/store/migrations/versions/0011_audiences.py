"""audiences: what each platform acknowledged, the sync runs, sizes over time, the schedule

Revision ID: 0011_audiences
Revises: 0010_alerts
"""

import sqlalchemy as sa
from alembic import op

from firstparty.store.models import JSONType, UTCDateTime

revision = "0011_audiences"
down_revision = "0010_alerts"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "audience_members_acked",
        sa.Column("audience", sa.String(length=64), nullable=False),
        sa.Column("destination", sa.String(length=64), nullable=False),
        sa.Column("member_key", sa.String(length=40), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("identifiers", JSONType, nullable=False),
        sa.Column("acked_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint(
            "audience", "destination", "member_key", name="pk_audience_members_acked"
        ),
    )
    op.create_table(
        "audience_runs",
        sa.Column("id", _ID, nullable=False),
        sa.Column("audience", sa.String(length=64), nullable=False),
        sa.Column("destination", sa.String(length=64), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("adds", sa.Integer(), nullable=False),
        sa.Column("removes", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_audience_runs"),
    )
    op.create_index(
        "ix_audience_runs_audience_destination_id",
        "audience_runs",
        ["audience", "destination", "id"],
    )
    op.create_table(
        "audience_sizes",
        sa.Column("audience", sa.String(length=64), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("consented", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("audience", "at", name="pk_audience_sizes"),
    )
    op.create_table(
        "audience_schedule",
        sa.Column("audience", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=64), nullable=False),
        sa.Column("lease_until", UTCDateTime(), nullable=False),
        sa.Column("next_run_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("audience", name="pk_audience_schedule"),
    )


def downgrade() -> None:
    op.drop_table("audience_schedule")
    op.drop_table("audience_sizes")
    op.drop_index("ix_audience_runs_audience_destination_id", table_name="audience_runs")
    op.drop_table("audience_runs")
    op.drop_table("audience_members_acked")
