"""Folding the rollups' shards of past hours into shard 0 (`store.shards.fold`) keeps every
report's numbers identical, in whole-hour and DST-changing time zones, leaves the recent hours
sharded, and loses nothing when a writer adds to a row the fold holds (each engine)."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from firstparty.reports import period, summary
from firstparty.store import db, shards
from firstparty.store.models import delivery_rollups, event_rollups

NOW = datetime(2026, 3, 30, 12, 30, tzinfo=UTC)  # the day after Europe/Paris moved to summer time
KEYS = [
    ("k1", "www", "PageView", False, False, "google", "gclid"),
    ("k2", "www", "Purchase", False, True, "meta", "fbclid"),
    ("k3", "crm", "Lead", True, True, "", ""),
]


def _fill(engine: sa.Engine) -> None:
    """Three keys and two outbox places in three shards every hour of five days up to now."""
    start = datetime(2026, 3, 25, 0, tzinfo=UTC)
    hours = [
        start + timedelta(hours=h) for h in range(int((NOW - start).total_seconds()) // 3600 + 1)
    ]
    event_rows: list[dict[str, Any]] = []
    outbox_rows: list[dict[str, Any]] = []
    for n, hour in enumerate(hours):
        for k, (key, source, name, bot, converted, utm, kind) in enumerate(KEYS):
            for shard in (0, 3, 7):
                event_rows.append(
                    {
                        "hour": hour,
                        "key": key,
                        "shard": shard,
                        "source": source,
                        "name": name,
                        "bot": bot,
                        "converted": converted,
                        "utm_source": utm,
                        "utm_medium": "",
                        "utm_campaign": "",
                        "click_kinds": kind,
                        "count": 1 + (n + k + shard) % 5,
                    }
                )
        for status in ("delivered", "pending"):
            for shard in (2, 5):  # no shard 0 row: the fold makes it
                outbox_rows.append(
                    {
                        "hour": hour,
                        "destination": "meta",
                        "status": status,
                        "source": "www",
                        "shard": shard,
                        "count": 1 + (n + shard) % 3,
                    }
                )
    with engine.begin() as conn:
        conn.execute(event_rollups.insert(), event_rows)
        conn.execute(delivery_rollups.insert(), outbox_rows)


def _reports(engine: sa.Engine) -> list[Any]:
    found = []
    for zone in ("UTC", "Europe/Paris", "Asia/Kolkata", "America/Los_Angeles"):
        for bots in (False, True):
            chosen = period.Period(date(2026, 3, 24), date(2026, 3, 30), period.zone(zone))
            found += [
                summary.totals_per_day(engine, period=chosen, include_bots=bots),
                summary.events_per_day(engine, period=chosen, include_bots=bots),
                summary.conversions_by_utm_source(engine, period=chosen, include_bots=bots),
                summary.conversions_by_click_kind(engine, period=chosen, include_bots=bots),
                summary.delivery_rates(engine, period=chosen),
                summary.outcomes_per_day(engine, period=chosen),
            ]
    return found


def _shard_rows(engine: sa.Engine, table: sa.Table) -> list[tuple[datetime, int]]:
    with engine.connect() as conn:
        query = sa.select(table.c.hour, table.c.shard).where(table.c.shard > 0)
        return [(row.hour, row.shard) for row in conn.execute(query)]


def test_fold_keeps_every_report_identical(database_url: str) -> None:
    engine = db.create_engine(database_url)
    try:
        _fill(engine)
        before = _reports(engine)
        assert any(day.events for day in before[0])
        folded = shards.fold(engine, now=NOW, chunk_rows=100)
        assert folded["event_rollups"] > 100 and folded["delivery_rollups"] > 100
        assert _reports(engine) == before
        # Only the hours that ended an hour or more ago are folded: 11:00 (ended 30 minutes
        # ago) and the current 12:00 keep their shards (NOW is 12:30).
        for table in (event_rollups, delivery_rollups):
            left = {hour for hour, _ in _shard_rows(engine, table)}
            assert left == {NOW.replace(minute=0) - timedelta(hours=h) for h in (0, 1)}
        again = shards.fold(engine, now=NOW)
        assert again == {"event_rollups": 0, "delivery_rollups": 0, "failure_counts": 0}
    finally:
        engine.dispose()


def _count(engine: sa.Engine, hour: datetime) -> int:
    with engine.connect() as conn:
        total = conn.execute(
            sa.select(sa.func.sum(delivery_rollups.c.count)).where(delivery_rollups.c.hour == hour)
        ).scalar()
        return int(total or 0)


def test_a_writer_adding_to_a_held_row_loses_nothing(database_url: str) -> None:
    """The fold holds shard 5's row of an old hour; a worker's tally adds 4 to that very row
    meanwhile. Whichever commits first, the hour's sum is the old one plus 4."""
    engine = db.create_engine(database_url)
    try:
        _fill(engine)
        hour = datetime(2026, 3, 26, 8, tzinfo=UTC)
        expected = _count(engine, hour) + 4
        upsert = shards.upsert(engine.dialect.name, delivery_rollups)
        row = {
            "hour": hour,
            "destination": "meta",
            "status": "delivered",
            "source": "www",
            "shard": 5,
            "count": 4,
        }
        writer = threading.Thread(target=lambda: _write(engine, upsert, row))
        with engine.begin() as conn:
            assert shards._fold_chunk(conn, delivery_rollups, NOW, 10_000) > 0
            writer.start()  # waits on the held row (or the write lock) until this commits
            writer.join(timeout=1.0)
        writer.join()
        assert _count(engine, hour) == expected
        shards.fold(engine, now=NOW)
        assert _count(engine, hour) == expected
        assert all(h != hour for h, _ in _shard_rows(engine, delivery_rollups))
    finally:
        engine.dispose()


def _write(engine: sa.Engine, upsert: Any, row: dict[str, Any]) -> None:
    with engine.begin() as conn:
        conn.execute(upsert, [row])
