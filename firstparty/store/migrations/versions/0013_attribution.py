"""conversion rollups by hour with first/last touch credit (counted from stored events); funnels
saved from the admin UI

Revision ID: 0013_attribution
Revises: 0012_reports
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from firstparty.reports import conversion_rollups
from firstparty.store.models import UTCDateTime

revision = "0013_attribution"
down_revision = "0012_reports"
branch_labels = None
depends_on = None


def upgrade() -> None:
    text = sa.String(length=255)
    op.create_table(
        "conversion_rollups",
        sa.Column("hour", UTCDateTime(), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("shard", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("ft_channel", sa.String(length=32), nullable=False),
        sa.Column("ft_source", text, nullable=False),
        sa.Column("ft_medium", text, nullable=False),
        sa.Column("ft_campaign", text, nullable=False),
        sa.Column("lt_channel", sa.String(length=32), nullable=False),
        sa.Column("lt_source", text, nullable=False),
        sa.Column("lt_medium", text, nullable=False),
        sa.Column("lt_campaign", text, nullable=False),
        sa.Column("cross_device", sa.Boolean(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("clicked", sa.String(length=64), nullable=False),
        sa.Column("recovered", sa.String(length=128), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("value_micros", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("hour", "key", "shard", name="pk_conversion_rollups"),
    )
    op.create_table(
        "funnels",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column(
            "steps",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("window_hours", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_funnels"),
    )
    conversion_rollups.backfill(op.get_bind())


def downgrade() -> None:
    op.drop_table("funnels")
    op.drop_table("conversion_rollups")
