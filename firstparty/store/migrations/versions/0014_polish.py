"""every alert message tried, with its outcome (alert_history), for the admin UI's Alerts page

Revision ID: 0014_polish
Revises: 0013_attribution
"""

import sqlalchemy as sa
from alembic import op

from firstparty.store.models import UTCDateTime

revision = "0014_polish"
down_revision = "0013_attribution"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alert_history",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("rule", sa.String(length=32), nullable=False),
        sa.Column("subject", sa.String(length=128), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_alert_history"),
    )
    op.create_index("ix_alert_history_at", "alert_history", ["at"])


def downgrade() -> None:
    op.drop_index("ix_alert_history_at", table_name="alert_history")
    op.drop_table("alert_history")
