"""alert states, the notices sent per channel, the evaluation lease, answers 500 per process round

Revision ID: 0010_alerts
Revises: 0009_rollups
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from firstparty.store.models import UTCDateTime

revision = "0010_alerts"
down_revision = "0009_rollups"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("rule", sa.String(length=32), nullable=False),
        sa.Column("subject", sa.String(length=128), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("since", UTCDateTime(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("rule", "subject", name="pk_alerts"),
    )
    op.create_table(
        "alert_notices",
        sa.Column("rule", sa.String(length=32), nullable=False),
        sa.Column("subject", sa.String(length=128), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("sent_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("rule", "subject", "channel", name="pk_alert_notices"),
    )
    lease = op.create_table(
        "alert_lease",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("holder", sa.String(length=64), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_alert_lease"),
    )
    # The one row every evaluator competes for (alerts/state.py takes it with an UPDATE).
    op.bulk_insert(
        lease, [{"name": "evaluator", "holder": "", "expires_at": datetime(2000, 1, 1, tzinfo=UTC)}]
    )
    op.create_table(
        "server_errors",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_server_errors"),
    )
    op.create_index("ix_server_errors_at", "server_errors", ["at"])


def downgrade() -> None:
    op.drop_index("ix_server_errors_at", table_name="server_errors")
    op.drop_table("server_errors")
    op.drop_table("alert_lease")
    op.drop_table("alert_notices")
    op.drop_table("alerts")
