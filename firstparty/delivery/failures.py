"""Failed outbox rows counted by destination and last error: what a replay would take.

The failures page showed these counts by counting every failed row (O(failed): 81 ms at
100,000 failed rows, 2 ms with none). They are kept instead as rows enter and leave `failed`,
in the transaction that moves them: `outbox.finish` (a row fails), `outbox.requeue` (a replay
takes it back), an erase and a retention prune (`take`: the rows are about to be deleted).
Each connection adds to its own shard, as `delivery.tally` does; readers sum the shards.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from firstparty.store import db, shards
from firstparty.store.models import FAILED_ONLY, deliveries, failure_counts

# One count's place: (destination, the failed row's last_error).
Place = tuple[str, str | None]


@dataclass(frozen=True)
class Count:
    """Failed rows of one destination with one error text (None: none was kept)."""

    destination: str
    reason: str | None
    count: int


def move(conn: Connection, entered: Iterable[Place], left: Iterable[Place] = ()) -> None:
    """Rows that became failed (`entered`) and rows that were failed and are no more (`left`)."""
    deltas: Counter[Place] = Counter(entered)
    deltas.subtract(left)
    _add(conn, deltas)


def take(conn: Connection, event_pks: Collection[str]) -> None:
    """Uncount the failed outbox rows of these events (about to be deleted)."""
    d = deliveries.c
    keys = sorted(event_pks)
    left: list[Place] = []
    for start in range(0, len(keys), 500):
        query = sa.select(d.destination, d.last_error).where(
            sa.text(FAILED_ONLY), d.event_pk.in_(keys[start : start + 500])
        )
        left += [(row.destination, row.last_error) for row in conn.execute(query)]
    move(conn, (), left)


def backfill(conn: Connection) -> None:
    """Count every failed row (the migration): one pass over ix_deliveries_failed."""
    d = deliveries.c
    query = (
        sa.select(d.destination, d.last_error, sa.func.count().label("n"))
        .where(sa.text(FAILED_ONLY))
        .group_by(d.destination, d.last_error)
    )
    _add(conn, Counter({(r.destination, r.last_error): int(r.n) for r in conn.execute(query)}))


def counts(engine: Engine, *, destination: str | None = None) -> list[Count]:
    """Failed rows by destination and error (those with any), from the shards' sums."""
    f = failure_counts.c
    total = sa.func.sum(f.count)
    query = (
        sa.select(f.destination, f.reason_key, sa.func.max(f.reason).label("reason"), total)
        .group_by(f.destination, f.reason_key)
        .having(total > 0)
    )
    if destination is not None:
        query = query.where(f.destination == destination)
    with db.reader(engine) as conn:
        return [Count(r.destination, r.reason, int(r[3])) for r in conn.execute(query)]


def key(reason: str | None) -> str:
    """The fixed-width key of an error text (None and "" apart)."""
    if reason is None:
        return "-"
    return hashlib.sha256(reason.encode()).hexdigest()


def _add(conn: Connection, deltas: Counter[Place]) -> None:
    """Add to one row per place; sorted, so concurrent transactions lock in the same order."""
    shard = shards.of(conn)
    rows = [
        {
            "destination": destination,
            "reason_key": key(reason),
            "shard": shard,
            "reason": reason,
            "count": n,
        }
        for (destination, reason), n in deltas.items()
        if n
    ]
    if rows:
        rows.sort(key=lambda row: (row["destination"], row["reason_key"]))
        conn.execute(shards.upsert(conn.dialect.name, failure_counts), rows)
