"""funnel_results: funnels computed off the request path for the preset ranges; funnel_schedule

Revision ID: 0022_funnel_results
Revises: 0021_source_id
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from firstparty.store.models import UTCDateTime

revision = "0022_funnel_results"
down_revision = "0021_source_id"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # One row per funnel definition (a hash: a changed funnel never shows the old one's counts),
    # preset range and time zone, replaced by each background round (reports/funnel_rounds.py).
    op.create_table(
        "funnel_results",
        sa.Column("funnel", sa.String(64), primary_key=True),
        sa.Column("definition", sa.String(64), primary_key=True),
        sa.Column("range_key", sa.String(16), primary_key=True),
        sa.Column("zone", sa.String(64), primary_key=True),
        sa.Column("first_day", sa.Date(), nullable=False),
        sa.Column("last_day", sa.Date(), nullable=False),
        sa.Column("computed_at", UTCDateTime(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("rows_read", sa.Integer(), nullable=False),
        sa.Column("capped", sa.Boolean(), nullable=False),
        sa.Column(
            "result",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
    )
    # When each funnel is next due, and which process computes it now (a lease).
    op.create_table(
        "funnel_schedule",
        sa.Column("funnel", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(64), nullable=False),
        sa.Column("lease_until", UTCDateTime(), nullable=False),
        sa.Column("next_run_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("funnel_schedule")
    op.drop_table("funnel_results")
