"""Which shard of a counter table a connection writes (`event_rollups`, `delivery_rollups`,
`failure_counts`), and folding the shards of past hours back into one row (`fold`).

Every ingest transaction and every worker move adds to the same few rows (today's page views,
today's pending deliveries): one row each would make concurrent transactions wait on each
other's commit. Each database connection instead adds to its own shard, drawn once when the
connection is opened, and readers sum the shards.

Shards only matter while an hour is being written. Once it is past, `fold` (run by serve's
periodic round beside retention pruning, and by `firstparty prune`) adds each key's shards
into shard 0 and deletes them, so a report over months reads one row per hour and key instead
of one per shard: the sums, hence every report, are the same before and after. A late writer
(an event with an old `occurred_at`, a worker settling an old hour's delivery) may still add to
a past hour; `fold` locks the shard rows it reads (`FOR UPDATE` on PostgreSQL and MySQL, the
write lock SQLite's `BEGIN IMMEDIATE` takes up front), adds them to shard 0 with the writers'
own upsert (count = count + n) and deletes exactly those rows in the same transaction. A writer
adding to a locked row waits for the commit and then, its row gone, inserts it anew: it is
folded at the next round. Nothing is counted twice or lost.

`failure_counts` has no hours: `fold` folds all its shards each round, and deletes the keys
whose count came back to zero (a replayed or pruned error text), which add nothing to a sum.
"""

from __future__ import annotations

import functools
import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from firstparty.store.models import delivery_rollups, event_rollups, failure_counts

SHARDS = 16
TABLES = (event_rollups, delivery_rollups, failure_counts)
SETTLE = timedelta(hours=1)  # hours starting before now - SETTLE are folded
CHUNK_ROWS = 5000


def of(conn: Connection) -> int:
    """This connection's shard, the same for its whole life (kept in its `info`)."""
    shard = conn.info.setdefault("rollup_shard", random.randrange(SHARDS))
    return int(shard)


def fold(
    engine: Engine,
    *,
    now: datetime | None = None,
    chunk_rows: int = CHUNK_ROWS,
    max_rows: int = 2_000_000,
) -> dict[str, int]:
    """Fold the shards of every hour that ended `SETTLE` or more ago into shard 0.

    Bounded chunks, one transaction each; answers the shard rows folded per table.
    """
    cutoff = (now or datetime.now(UTC)).astimezone(UTC) - SETTLE - timedelta(hours=1)
    folded: dict[str, int] = {}
    for table in TABLES:
        done = 0
        while done < max_rows:
            with engine.begin() as conn:
                n = _fold_chunk(conn, table, cutoff, min(chunk_rows, max_rows - done))
            done += n
            if n < chunk_rows:
                break
        folded[table.name] = done
    with engine.begin() as conn:
        f = failure_counts.c
        conn.execute(failure_counts.delete().where(f.shard == 0, f.count == 0))
    return folded


def _fold_chunk(conn: Connection, table: sa.Table, cutoff: datetime, limit: int) -> int:
    c = table.c
    pk = [col for col in table.primary_key.columns if col.name != "shard"]
    query = (
        sa.select(table)
        .where(c.shard > 0, *([c.hour <= cutoff] if "hour" in c else []))
        .order_by(*pk, c.shard)
        .limit(limit)
        .with_for_update()
    )
    rows = [dict(row) for row in conn.execute(query).mappings()]
    if not rows:
        return 0
    sums: dict[tuple[Any, ...], dict[str, Any]] = {}
    totals: dict[tuple[Any, ...], int] = defaultdict(int)
    for row in rows:
        place = tuple(row[col.name] for col in pk)
        sums.setdefault(place, row)
        totals[place] += int(row["count"])
    merged = [sums[place] | {"shard": 0, "count": n} for place, n in sorted(totals.items()) if n]
    if merged:
        conn.execute(upsert(conn.dialect.name, table), merged)
    where = [col == sa.bindparam(f"k_{col.name}") for col in [*pk, c.shard]]
    conn.execute(
        table.delete().where(*where),
        [{f"k_{col.name}": row[col.name] for col in [*pk, c.shard]} for row in rows],
    )
    return len(rows)


@functools.cache
def upsert(dialect: str, table: sa.Table) -> Any:
    """INSERT adding to `count` on the primary key, as the writers do (built once per dialect
    and table: building it costs more than the rows)."""
    if dialect in ("postgresql", "sqlite"):
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        base = insert(table)
        return base.on_conflict_do_update(
            index_elements=list(table.primary_key.columns),
            set_={"count": table.c.count + base.excluded["count"]},
        )
    base_my = mysql.insert(table)
    return base_my.on_duplicate_key_update(count=table.c.count + base_my.inserted["count"])
