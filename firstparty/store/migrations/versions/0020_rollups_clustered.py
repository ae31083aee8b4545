"""SQLite: the hourly report counts (event_rollups, delivery_rollups) as WITHOUT ROWID tables,
stored in their primary key's order (hour first), so a report's range of hours is read in one
pass of one B-tree instead of the key's index plus a look-up of every row in the table.
PostgreSQL and MySQL/MariaDB are left as they are (InnoDB already stores rows in key order).

Revision ID: 0020_rollups_clustered
Revises: 0019_gfollow
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.sql.schema import SchemaItem

from firstparty.store.models import UTCDateTime

revision = "0020_rollups_clustered"
down_revision = "0019_gfollow"
branch_labels = None
depends_on = None


def upgrade() -> None:
    _rebuild(with_rowid=False)


def downgrade() -> None:
    _rebuild(with_rowid=True)


def _rebuild(*, with_rowid: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for name, columns in (("event_rollups", _event_columns), ("delivery_rollups", _outbox_columns)):
        made = op.create_table(f"{name}_new", *columns(), sqlite_with_rowid=with_rowid)
        names = ", ".join(f'"{c.name}"' for c in made.columns)
        op.execute(f"INSERT INTO {name}_new ({names}) SELECT {names} FROM {name}")
        op.drop_table(name)
        op.rename_table(f"{name}_new", name)


def _event_columns() -> list[SchemaItem]:
    return [
        sa.Column("hour", UTCDateTime(), nullable=False),
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
        sa.PrimaryKeyConstraint("hour", "key", "shard", name="pk_event_rollups"),
    ]


def _outbox_columns() -> list[SchemaItem]:
    return [
        sa.Column("hour", UTCDateTime(), nullable=False),
        sa.Column("destination", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("shard", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "hour", "destination", "status", "source", "shard", name="pk_delivery_rollups"
        ),
    ]
