"""Outbox rows per UTC hour of creation, destination, status and the event's source, kept as
the statuses move.

Every status change of `deliveries` goes through `outbox`, which moves the counts in the same
transaction, from the rows it changed (read under lock before the change): the delivery health
report reads these few rows instead of the outbox. Retention pruning keeps the counts (no
personal data); a privacy erase takes the person's rows off.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection

from firstparty.store import shards
from firstparty.store.models import deliveries, delivery_rollups

# One count's place: (UTC hour created, destination, status, the event's source or "").
Place = tuple[datetime, str, str, str]


def hour(created_at: datetime) -> datetime:
    """The UTC hour an outbox row counts in: the start of the hour it was created in."""
    return created_at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def move(conn: Connection, moves: Iterable[tuple[Place, Place | None]]) -> None:
    """Each (from, to): one row left `from` (None: a new row) and went to `to` (None: gone)."""
    deltas: Counter[Place] = Counter()
    for before, after in moves:
        if before is not None:
            deltas[before] -= 1
        if after is not None:
            deltas[after] += 1
    _upsert(conn, deltas)


def added(conn: Connection, rows: Iterable[dict[str, Any]]) -> None:
    """New outbox rows (outbox.row's dicts)."""
    deltas = Counter(
        (hour(r["created_at"]), r["destination"], str(r["status"]), r.get("source") or "")
        for r in rows
    )
    _upsert(conn, deltas)


def take(conn: Connection, event_pks: Iterable[str]) -> None:
    """Uncount the outbox rows of these events (about to be deleted)."""
    d = deliveries.c
    keys = sorted(event_pks)
    deltas: Counter[Place] = Counter()
    for start in range(0, len(keys), 500):
        query = sa.select(d.created_at, d.destination, d.status, d.source).where(
            d.event_pk.in_(keys[start : start + 500])
        )
        for row in conn.execute(query):
            deltas[(hour(row.created_at), row.destination, row.status, row.source or "")] -= 1
    _upsert(conn, deltas)


def backfill(conn: Connection) -> None:
    """Count every stored outbox row (the migration), in id order."""
    d = deliveries.c
    after = 0
    while True:
        query = sa.select(d.id, d.created_at, d.destination, d.status, d.source)
        rows = conn.execute(query.where(d.id > after).order_by(d.id).limit(5000)).all()
        if not rows:
            return
        places = ((hour(r.created_at), r.destination, r.status, r.source or "") for r in rows)
        _upsert(conn, Counter(places))
        after = rows[-1].id


def _upsert(conn: Connection, deltas: Counter[Place]) -> None:
    """Add to one row per place; sorted, so concurrent transactions lock in the same order."""
    shard = shards.of(conn)
    rows = [
        {
            "hour": place[0],
            "destination": place[1],
            "status": place[2],
            "source": place[3],
            "shard": shard,
            "count": n,
        }
        for place, n in sorted(deltas.items())
        if n
    ]
    if not rows:
        return
    conn.execute(_statement(conn.dialect.name), rows)


@functools.cache
def _statement(dialect: str) -> Any:
    """The upsert adding `count`, built once per dialect (building it costs more than the rows)."""
    table = delivery_rollups
    if dialect in ("postgresql", "sqlite"):
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        base = insert(table)
        return base.on_conflict_do_update(
            index_elements=[
                table.c.hour,
                table.c.destination,
                table.c.status,
                table.c.source,
                table.c.shard,
            ],
            set_={"count": table.c.count + base.excluded["count"]},
        )
    base_my = mysql.insert(table)
    return base_my.on_duplicate_key_update(count=table.c.count + base_my.inserted["count"])
