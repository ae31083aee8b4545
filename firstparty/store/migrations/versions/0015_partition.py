"""PostgreSQL: events and tracks partitioned by month; event_keys de-duplicates ingest there

Revision ID: 0015_partition
Revises: 0014_polish

On PostgreSQL `events` (by received_at) and `tracks` (by created_at) become tables PARTITIONED
BY RANGE, one partition a month and a DEFAULT one: each is made again as a partitioned table,
its rows copied, its indexes made again under the same names, the old one dropped. A partitioned
table's unique keys must hold the partition key, so their primary keys become (id, received_at)
and (id, created_at), the unique (source, event_id) of events moves to the new `event_keys`
(filled from the events kept), and the foreign keys deliveries.event_pk -> events.id and
track_events.track_id -> tracks.id are dropped (they could only name a unique id). SQLite and
MySQL/MariaDB get the empty `event_keys` table and nothing else.
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0015_partition"
down_revision = "0014_polish"
branch_labels = None
depends_on = None

# Table -> its partition key (the time each row is kept by).
PARTITIONED = {"events": "received_at", "tracks": "created_at"}
# Months before this one given a partition of their own for rows already stored; older rows
# go to the DEFAULT partition (pruned row by row, as before).
MONTHS_BACK = 24


def upgrade() -> None:
    op.create_table(
        "event_keys",
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column(
            "event_id",
            sa.String(length=128)
            .with_variant(
                mysql.VARCHAR(charset="utf8mb4", collation="utf8mb4_bin", length=128), "mariadb"
            )
            .with_variant(
                mysql.VARCHAR(charset="utf8mb4", collation="utf8mb4_bin", length=128), "mysql"
            ),
            nullable=False,
        ),
        sa.Column("event_pk", sa.String(length=26), nullable=False),
        sa.PrimaryKeyConstraint("source", "event_id", name="pk_event_keys"),
    )
    op.create_index("ix_event_keys_event_pk", "event_keys", ["event_pk"], unique=False)
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        "INSERT INTO event_keys (source, event_id, event_pk)"
        " SELECT source, event_id, id FROM events"
    )
    op.drop_constraint("fk_deliveries_event_pk", "deliveries", type_="foreignkey")
    op.drop_constraint("fk_track_events_track_id", "track_events", type_="foreignkey")
    op.drop_constraint("uq_events_source_event_id", "events", type_="unique")
    for table, column in PARTITIONED.items():
        _rebuild(table, column, partitioned=True)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table, column in PARTITIONED.items():
            _rebuild(table, column, partitioned=False)
        op.create_unique_constraint("uq_events_source_event_id", "events", ["source", "event_id"])
        op.create_foreign_key(
            "fk_track_events_track_id", "track_events", "tracks", ["track_id"], ["id"]
        )
        op.create_foreign_key(
            "fk_deliveries_event_pk", "deliveries", "events", ["event_pk"], ["id"]
        )
    op.drop_index("ix_event_keys_event_pk", table_name="event_keys")
    op.drop_table("event_keys")


def _rebuild(table: str, column: str, *, partitioned: bool) -> None:
    """Make `table` again (partitioned by month of `column`, or plain), rows and indexes kept."""
    conn = op.get_bind()
    indexes = [
        (ix["name"], [str(c) for c in ix["column_names"]])
        for ix in sa.inspect(conn).get_indexes(table)
        if not ix.get("unique") and ix["name"]
    ]
    for name, _ in indexes:
        op.drop_index(name, table_name=table)
    op.execute(f"ALTER TABLE {table} DROP CONSTRAINT pk_{table}")
    old = f"{table}_before_0015"
    op.execute(f"ALTER TABLE {table} RENAME TO {old}")
    sequence = conn.execute(sa.text(f"SELECT pg_get_serial_sequence('{old}', 'id')")).scalar()
    by = f" PARTITION BY RANGE ({column})" if partitioned else ""
    op.execute(f"CREATE TABLE {table} (LIKE {old} INCLUDING DEFAULTS){by}")
    if partitioned:
        for month in _months(conn, old, column):
            _partition(table, month)
        op.execute(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT")
    op.execute(f"INSERT INTO {table} SELECT * FROM {old}")
    key = f"id, {column}" if partitioned else "id"
    op.execute(f"ALTER TABLE {table} ADD CONSTRAINT pk_{table} PRIMARY KEY ({key})")
    for name, columns in indexes:
        op.create_index(name, table, columns, unique=False)
    if sequence:  # tracks.id: its sequence goes on, owned by the new table
        op.execute(f"ALTER SEQUENCE {sequence} OWNED BY {table}.id")
    op.execute(f"DROP TABLE {old}")


def _months(conn: sa.Connection, table: str, column: str) -> list[datetime]:
    """The first day of every month with rows (up to MONTHS_BACK ago), this month and the next."""
    now = datetime.now(UTC).replace(tzinfo=None)
    this = datetime(now.year, now.month, 1)
    oldest = _shift(this, -MONTHS_BACK)
    found = conn.execute(
        sa.text(
            f"SELECT DISTINCT date_trunc('month', {column}) FROM {table} WHERE {column} >= :oldest"
        ),
        {"oldest": oldest},
    )
    months = {row[0] for row in found} | {this, _shift(this, 1)}
    return sorted(months)


def _shift(month: datetime, by: int) -> datetime:
    index = month.year * 12 + month.month - 1 + by
    return datetime(index // 12, index % 12 + 1, 1)


def _partition(table: str, month: datetime) -> None:
    name = f"{table}_p{month:%Y_%m}"
    start, end = f"{month:%Y-%m-%d}", f"{_shift(month, 1):%Y-%m-%d}"
    op.execute(f"CREATE TABLE {name} PARTITION OF {table} FOR VALUES FROM ('{start}') TO ('{end}')")
