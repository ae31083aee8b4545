"""Delete rows older than their retention (`settings.retention`), in small chunks.

Each chunk is its own short transaction, so ingest never waits long on a prune; a run stops
after `prune_max_rows` per table (the next run goes on). An event goes with its outbox rows,
its click ids and its links to logged requests; a logged request with its links. The admin
sign-in rows go once they no longer count: failures past their window, revocations past the
session's expiry (whatever the settings).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from firstparty.settings import RetentionSettings
from firstparty.store.models import (
    admin_login_failures,
    admin_revocations,
    click_ids,
    deliveries,
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


def _drop_events(conn: Connection, ids: list[Any]) -> None:
    conn.execute(sa.delete(track_events).where(track_events.c.event_pk.in_(ids)))
    conn.execute(sa.delete(deliveries).where(deliveries.c.event_pk.in_(ids)))
    conn.execute(sa.delete(click_ids).where(click_ids.c.event_pk.in_(ids)))
    conn.execute(sa.delete(events).where(events.c.id.in_(ids)))


def _drop_tracks(conn: Connection, ids: list[Any]) -> None:
    conn.execute(sa.delete(track_events).where(track_events.c.track_id.in_(ids)))
    conn.execute(sa.delete(tracks).where(tracks.c.id.in_(ids)))


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
        removed[name] = _prune(engine, table, time, drop, cutoff, settings)
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
