"""delivery health and match quality rollups, the platforms' verdicts, the verdicts lease

Revision ID: 0017_health
Revises: 0016_reports_source
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from firstparty.store.models import UTCDateTime

revision = "0017_health"
down_revision = "0016_reports_source"
branch_labels = None
depends_on = None

_KEYS = ("hour", "destination", "source", "event_name")


def _dimensions() -> list[sa.Column[object]]:
    return [
        sa.Column("hour", UTCDateTime(), nullable=False),
        sa.Column("destination", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("event_name", sa.String(length=128), nullable=False),
    ]


def _counts() -> list[sa.Column[object]]:
    return [
        sa.Column("shard", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "delivery_outcomes",
        *_dimensions(),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("code", sa.String(length=160), nullable=False),
        *_counts(),
        sa.PrimaryKeyConstraint(*_KEYS, "outcome", "code", "shard", name="pk_delivery_outcomes"),
    )
    op.create_table(
        "delivery_latency",
        *_dimensions(),
        sa.Column("bucket", sa.SmallInteger(), autoincrement=False, nullable=False),
        *_counts(),
        sa.PrimaryKeyConstraint(*_KEYS, "bucket", "shard", name="pk_delivery_latency"),
    )
    op.create_table(
        "match_rollups",
        *_dimensions(),
        sa.Column("key", sa.String(length=16), nullable=False),
        *_counts(),
        sa.PrimaryKeyConstraint(*_KEYS, "key", "shard", name="pk_match_rollups"),
    )
    op.create_table(
        "platform_verdicts",
        sa.Column("destination", sa.String(length=64), nullable=False),
        sa.Column("event_name", sa.String(length=128), nullable=False),
        sa.Column("metric", sa.String(length=32), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("value", sa.String(length=64), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("fetched_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint(
            "destination", "event_name", "metric", "day", name="pk_platform_verdicts"
        ),
    )
    # The row the verdict pullers compete for (delivery/verdicts.py), as alerts' "evaluator".
    lease = sa.table(
        "alert_lease",
        sa.column("name", sa.String()),
        sa.column("holder", sa.String()),
        sa.column("expires_at", UTCDateTime()),
    )
    op.bulk_insert(
        lease, [{"name": "verdicts", "holder": "", "expires_at": datetime(2000, 1, 1, tzinfo=UTC)}]
    )


def downgrade() -> None:
    op.execute("DELETE FROM alert_lease WHERE name = 'verdicts'")
    op.drop_table("platform_verdicts")
    op.drop_table("match_rollups")
    op.drop_table("delivery_latency")
    op.drop_table("delivery_outcomes")
