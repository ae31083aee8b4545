"""PostgreSQL's monthly partitions of the big append-only tables: made ahead, dropped when old.

`events` (by received_at) and `tracks` (by created_at) are PARTITIONED BY RANGE on PostgreSQL
(0015_partition): one partition a month, `<table>_pYYYY_MM`, and `<table>_default` for a row no
month holds (a clock far off, or upkeep that did not run), so an insert never fails for want of
a partition. `ensure` makes this month's and next month's (the migration, `firstparty migrate`,
the server at start and at every prune round call it); a month made while the default holds
rows of it takes them over. `older` lists the months wholly before a cutoff, for retention to
drop. SQLite and MySQL/MariaDB have plain tables: every function here is a no-op there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

# Partitioned table -> its partition key (the time each row is kept by).
PARTITIONED = {"events": "received_at", "tracks": "created_at"}
# One upkeep at a time across processes (a transaction-scoped advisory lock).
LOCK_KEY = 0x66705F7061727473  # "fp_parts"
# DDL here waits at most this long for a lock held by a long query, then gives up this round.
LOCK_TIMEOUT = "5s"
_UPPER = re.compile(r"TO \('([^']+)'\)")


@dataclass(frozen=True)
class Partition:
    name: str
    end: datetime | None  # exclusive upper bound (UTC); None for the DEFAULT partition


def partitioned(dialect: sa.Dialect) -> bool:
    """Whether this engine keeps events and tracks in monthly partitions."""
    return dialect.name == "postgresql"


def month_of(at: datetime) -> datetime:
    """The first instant (UTC) of the month `at` is in."""
    at = at.astimezone(UTC)
    return datetime(at.year, at.month, 1, tzinfo=UTC)


def shift(month: datetime, by: int) -> datetime:
    index = month.year * 12 + month.month - 1 + by
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def name_of(table: str, month: datetime) -> str:
    return f"{table}_p{month:%Y_%m}"


def listed(conn: Connection, table: str) -> list[Partition]:
    """The partitions of `table`, by name, with their upper bounds."""
    rows = conn.execute(
        sa.text(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i"
            " JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = CAST(:table AS regclass) ORDER BY c.relname"
        ),
        {"table": table},
    )
    return [Partition(str(name), _upper(str(bound))) for name, bound in rows]


def _upper(bound: str) -> datetime | None:
    found = _UPPER.search(bound)
    if found is None:
        return None  # DEFAULT
    return datetime.fromisoformat(found.group(1)).replace(tzinfo=UTC)


def ensure(engine: Engine, *, now: datetime | None = None) -> list[str]:
    """Make this month's and next month's partitions where missing; the names made."""
    if not partitioned(engine.dialect):
        return []
    this = month_of(now or datetime.now(UTC))
    made: list[str] = []
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
        conn.execute(sa.text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
        for table in PARTITIONED:
            if not _is_partitioned(conn, table):  # a database not migrated yet
                continue
            have = {p.name for p in listed(conn, table)}
            for month in (this, shift(this, 1)):
                if name_of(table, month) not in have:
                    made.append(make(conn, table, month))
    return made


def _is_partitioned(conn: Connection, table: str) -> bool:
    query = "SELECT count(*) FROM pg_partitioned_table WHERE partrelid = to_regclass(:table)"
    return bool(conn.execute(sa.text(query), {"table": table}).scalar_one())


def make(conn: Connection, table: str, month: datetime) -> str:
    """Attach `month`'s partition to `table`, moving in the rows the default held of it.

    Made apart then attached: ATTACH takes a lock that lets inserts go on (CREATE TABLE ...
    PARTITION OF would block them), and the default must hold none of the month's rows.
    """
    name, column = name_of(table, month), PARTITIONED[table]
    start, end = _literal(month), _literal(shift(month, 1))
    conn.execute(sa.text(f"CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS)"))
    default = f"{table}_default"
    if any(p.name == default for p in listed(conn, table)):
        conn.execute(
            sa.text(
                f"WITH moved AS (DELETE FROM {default} WHERE {column} >= '{start}'"
                f" AND {column} < '{end}' RETURNING *) INSERT INTO {name} SELECT * FROM moved"
            )
        )
    conn.execute(
        sa.text(
            f"ALTER TABLE {table} ATTACH PARTITION {name} FOR VALUES FROM ('{start}') TO ('{end}')"
        )
    )
    return name


def _literal(month: datetime) -> str:
    # The columns hold naive UTC (models.UTCDateTime).
    return f"{month:%Y-%m-%d %H:%M:%S}"


def older(conn: Connection, table: str, cutoff: datetime) -> list[Partition]:
    """The monthly partitions of `table` whose every row is older than `cutoff`, oldest first."""
    return [p for p in listed(conn, table) if p.end is not None and p.end <= cutoff]


def ids(conn: Connection, partition: str, *, after: object | None, limit: int) -> list[object]:
    """A page of a partition's row ids in order, after `after` (keyset)."""
    where = "" if after is None else " WHERE id > :after"
    query = f"SELECT id FROM {partition}{where} ORDER BY id LIMIT :limit"
    return [row[0] for row in conn.execute(sa.text(query), {"after": after, "limit": limit})]


def drop(engine: Engine, partition: str) -> None:
    """Drop one partition and its rows at once (waiting LOCK_TIMEOUT at most for the lock)."""
    with engine.begin() as conn:
        conn.execute(sa.text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
        conn.execute(sa.text(f"DROP TABLE {partition}"))
