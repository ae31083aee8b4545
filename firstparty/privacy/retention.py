"""Delete rows older than their retention (`settings.retention`), in small chunks.

Each chunk is its own short transaction, so ingest never waits long on a prune; a run stops
after `prune_max_rows` per table (the next run goes on). An event goes with its outbox rows,
its click ids, its de-duplication key and its links to logged requests; a logged request with
its links. The admin sign-in rows go once they no longer count: failures past their window,
revocations past the session's expiry (whatever the settings).

On PostgreSQL events and tracks are kept in monthly partitions (store/partitions.py): a month
wholly past the retention is dropped at once, after its rows' outbox rows, click ids, keys and
links were deleted in chunks (they live in plain tables); the month the cutoff falls in, and
the default partition, are pruned row by row as on the other engines. Each round first makes
this month's and next month's partitions where missing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from firstparty.delivery import failures
from firstparty.settings import RetentionSettings
from firstparty.store import partitions
from firstparty.store.models import (
    admin_login_failures,
    admin_revocations,
    click_ids,
    deliveries,
    event_keys,
    events,
    otp_attempts,
    otp_codes,
    track_events,
    tracks,
)
from firstparty.web import signin


def _older(
    conn: Connection, table: sa.Table, time: sa.Column[Any], cutoff: datetime, limit: int
) -> list[Any]:
    query = sa.select(table.c.id).where(time < cutoff).order_by(time).limit(limit)
    return [row[0] for row in conn.execute(query)]


def _event_rows(conn: Connection, ids: list[Any]) -> None:
    """What goes with these events, in the tables that are not partitioned."""
    conn.execute(sa.delete(track_events).where(track_events.c.event_pk.in_(ids)))
    failures.take(conn, ids)  # failed work no replay can take any more
    conn.execute(sa.delete(deliveries).where(deliveries.c.event_pk.in_(ids)))
    conn.execute(sa.delete(click_ids).where(click_ids.c.event_pk.in_(ids)))
    conn.execute(sa.delete(event_keys).where(event_keys.c.event_pk.in_(ids)))


def _drop_events(conn: Connection, ids: list[Any]) -> None:
    _event_rows(conn, ids)
    conn.execute(sa.delete(events).where(events.c.id.in_(ids)))


def _track_rows(conn: Connection, ids: list[Any]) -> None:
    conn.execute(sa.delete(track_events).where(track_events.c.track_id.in_(ids)))


def _drop_tracks(conn: Connection, ids: list[Any]) -> None:
    _track_rows(conn, ids)
    conn.execute(sa.delete(tracks).where(tracks.c.id.in_(ids)))


# Partitioned table -> what goes with a chunk of its rows.
_WITH_ROWS: dict[str, Callable[[Connection, list[Any]], None]] = {
    "events": _event_rows,
    "tracks": _track_rows,
}


def _drop_partitions(
    engine: Engine, table: sa.Table, cutoff: datetime, settings: RetentionSettings
) -> int:
    """Drop the months of `table` wholly older than `cutoff`; the rows they held.

    The rows that go with theirs are deleted first, chunk by chunk through the month's ids; a
    month is dropped only once that is done (a run that stops midway starts it again).
    """
    if not partitions.partitioned(engine.dialect) or table.name not in _WITH_ROWS:
        return 0
    with engine.connect() as conn:
        old = partitions.older(conn, table.name, cutoff)
    removed = 0
    for partition in old:
        after: object | None = None
        while True:
            with engine.begin() as conn:
                ids = partitions.ids(
                    conn, partition.name, after=after, limit=settings.prune_chunk_rows
                )
                if ids:
                    _WITH_ROWS[table.name](conn, ids)
            removed += len(ids)
            if len(ids) < settings.prune_chunk_rows:
                break
            after = ids[-1]
        partitions.drop(engine, partition.name)
    return removed


def _drop_rows(table: sa.Table) -> Callable[[Connection, list[Any]], None]:
    def drop(conn: Connection, ids: list[Any]) -> None:
        conn.execute(sa.delete(table).where(table.c.id.in_(ids)))

    return drop


def _prune(
    engine: Engine,
    table: sa.Table,
    time: sa.Column[Any],
    drop: Callable[[Connection, list[Any]], None],
    cutoff: datetime,
    settings: RetentionSettings,
) -> int:
    removed = 0
    while removed < settings.prune_max_rows:
        size = min(settings.prune_chunk_rows, settings.prune_max_rows - removed)
        with engine.begin() as conn:
            ids = _older(conn, table, time, cutoff, size)
            if ids:
                drop(conn, ids)
        removed += len(ids)
        if len(ids) < size:
            break
    return removed


def prune(
    engine: Engine, settings: RetentionSettings, *, now: datetime | None = None
) -> dict[str, int]:
    """Delete what is older than each table's retention; the rows removed per table."""
    now = now or datetime.now(UTC)
    partitions.ensure(engine, now=now)
    plan = [
        ("events", settings.events_days, events, events.c.received_at, _drop_events),
        ("tracks", settings.tracks_days, tracks, tracks.c.created_at, _drop_tracks),
        ("otp_codes", settings.otp_days, otp_codes, otp_codes.c.created_at, _drop_rows(otp_codes)),
        (
            "otp_attempts",
            settings.otp_days,
            otp_attempts,
            otp_attempts.c.created_at,
            _drop_rows(otp_attempts),
        ),
    ]
    removed: dict[str, int] = {}
    for name, days, table, time, drop in plan:
        if days is None:
            continue
        cutoff = now - timedelta(days=days)
        removed[name] = _drop_partitions(engine, table, cutoff, settings)
        removed[name] += _prune(engine, table, time, drop, cutoff, settings)
    failures = admin_login_failures
    removed["admin_login_failures"] = _prune(
        engine, failures, failures.c.created_at, _drop_rows(failures), now - signin.WINDOW, settings
    )
    removed["admin_revocations"] = _prune_revocations(engine, now, settings)
    return removed


def _prune_revocations(engine: Engine, now: datetime, settings: RetentionSettings) -> int:
    """Revoked sessions past their own expiry (a cookie that old is refused anyway)."""
    table, removed = admin_revocations, 0
    while removed < settings.prune_max_rows:
        size = min(settings.prune_chunk_rows, settings.prune_max_rows - removed)
        query = sa.select(table.c.nonce).where(table.c.expires_at < now).limit(size)
        with engine.begin() as conn:
            nonces = [row[0] for row in conn.execute(query)]
            if nonces:
                conn.execute(sa.delete(table).where(table.c.nonce.in_(nonces)))
        removed += len(nonces)
        if len(nonces) < size:
            break
    return removed
