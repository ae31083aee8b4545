"""the event's source on each outbox row (deliveries.source) and in the outbox counts
(delivery_rollups), so the delivery reports follow the source filter

Each outbox row takes its event's source; the counts are made again from the stored rows, and
what they held beyond them (rows of pruned events) is kept with the source "" (unknown).

Revision ID: 0016_reports_source
Revises: 0015_partition
"""

from collections import Counter
from typing import Any

import sqlalchemy as sa
from alembic import op

from firstparty.delivery import tally
from firstparty.store.models import UTCDateTime

revision = "0016_reports_source"
down_revision = "0015_partition"
branch_labels = None
depends_on = None

PLACE = ("hour", "destination", "status")


def upgrade() -> None:
    conn = op.get_bind()
    op.add_column("deliveries", sa.Column("source", sa.String(length=64), nullable=True))
    deliveries = sa.table("deliveries", sa.column("event_pk"), sa.column("source"))
    events = sa.table("events", sa.column("id"), sa.column("source"))
    of_event = sa.select(events.c.source).where(events.c.id == deliveries.c.event_pk)
    conn.execute(sa.update(deliveries).values(source=of_event.scalar_subquery()))
    counted = _summed(conn, PLACE)
    op.drop_table("delivery_rollups")
    _create(with_source=True)
    tally.backfill(conn)
    stored = _summed(conn, PLACE)
    left = [
        dict(zip(PLACE, place, strict=True)) | {"source": "", "shard": 0, "count": n}
        for place, n in sorted((counted - stored).items(), key=repr)
    ]
    _insert(conn, left)


def downgrade() -> None:
    conn = op.get_bind()
    counted = _summed(conn, PLACE)
    op.drop_table("delivery_rollups")
    _create(with_source=False)
    rows = [
        dict(zip(PLACE, place, strict=True)) | {"shard": 0, "count": n}
        for place, n in sorted(counted.items(), key=repr)
        if n
    ]
    _insert(conn, rows)
    op.drop_column("deliveries", "source")


def _create(*, with_source: bool) -> None:
    source = [sa.Column("source", sa.String(length=64), nullable=False)] if with_source else []
    keys = ["hour", "destination", "status", *(["source"] if with_source else []), "shard"]
    op.create_table(
        "delivery_rollups",
        sa.Column("hour", UTCDateTime(), nullable=False),
        sa.Column("destination", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        *source,
        sa.Column("shard", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(*keys, name="pk_delivery_rollups"),
    )


def _summed(conn: sa.Connection, columns: tuple[str, ...]) -> Counter[tuple[Any, ...]]:
    table = sa.table(
        "delivery_rollups",
        sa.column("hour", UTCDateTime()),
        *(sa.column(c) for c in (*columns[1:], "count")),
    )
    picked = [table.c[c] for c in columns]
    query = sa.select(*picked, sa.func.sum(table.c["count"])).group_by(*picked)
    return Counter({tuple(row[:-1]): int(row[-1]) for row in conn.execute(query)})


def _insert(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    columns = [sa.column("hour", UTCDateTime()), *(sa.column(c) for c in rows[0] if c != "hour")]
    conn.execute(sa.insert(sa.table("delivery_rollups", *columns)), rows)
