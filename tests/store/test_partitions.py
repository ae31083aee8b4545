"""PostgreSQL's monthly partitions of events and tracks (0015_partition, store/partitions.py):
the migration keeps the rows, ingest and de-duplication work on them, retention drops whole old
months, and a row lands in its month's partition on either side of a month's boundary."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from firstparty import ids
from firstparty.privacy import retention
from firstparty.settings import RetentionSettings
from firstparty.store import db, migrate, partitions
from firstparty.store import models as m
from tests.conftest import SERVER_KEY, make_database, running_app, settings_for


def this_month() -> datetime:
    """Read when a test starts, not when the module is imported: a run may cross a month."""
    return partitions.month_of(datetime.now(UTC))


@pytest.fixture
def pg_engine(tmp_path: Path) -> Iterator[sa.Engine]:
    """A migrated PostgreSQL database."""
    for url in make_database("postgresql", tmp_path, migrated=True):
        engine = db.create_engine(url, poolclass=sa.NullPool)
        yield engine
        engine.dispose()


def _event(at: datetime, event_id: str | None = None) -> dict[str, Any]:
    return {
        "id": ids.new_id(),
        "source": "crm",
        "event_id": event_id or ids.new_uuid(),
        "type": "track",
        "name": "Lead",
        "occurred_at": at,
        "received_at": at,
        "visitor_id": None,
        "user_id": None,
        "request": {},
        "response": {},
        "user": {},
        "context": {},
        "consent": {},
    }


def _add(conn: sa.Connection, at: datetime, *, keys: bool = True) -> str:
    """One event received at `at`, with its outbox row, click id, key, and a logged request."""
    row = _event(at)
    conn.execute(sa.insert(m.events).values(row))
    if keys:
        key = {"source": "crm", "event_id": row["event_id"], "event_pk": row["id"]}
        conn.execute(sa.insert(m.event_keys).values(key))
    delivery = conn.execute(
        sa.insert(m.deliveries).values(
            event_pk=row["id"],
            destination="fake",
            status="delivered",
            attempts=1,
            next_attempt_at=at,
            occurred_at=at,
            created_at=at,
            updated_at=at,
        )
    ).inserted_primary_key[0]
    track = conn.execute(
        sa.insert(m.tracks).values(
            destination="fake", status="delivered", attempt=1, method="POST", url="u", created_at=at
        )
    ).inserted_primary_key[0]
    conn.execute(
        sa.insert(m.track_events).values(
            track_id=track, delivery_id=delivery, event_pk=row["id"], outcome="delivered"
        )
    )
    conn.execute(
        sa.insert(m.click_ids).values(
            event_pk=row["id"], kind="gclid", value=row["id"], first_seen_at=at
        )
    )
    return str(row["id"])


def _where(conn: sa.Connection, table: str) -> dict[str, str]:
    """Each row's id -> the partition it is stored in."""
    query = f"SELECT id, tableoid::regclass::text FROM {table}"
    return {str(r[0]): str(r[1]) for r in conn.execute(sa.text(query))}


def _count(conn: sa.Connection, table: sa.Table) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def _names(conn: sa.Connection, table: str) -> set[str]:
    return {p.name for p in partitions.listed(conn, table)}


def _kind(conn: sa.Connection, table: str) -> str:
    query = "SELECT relkind FROM pg_class WHERE oid = to_regclass(:t)"
    return str(conn.execute(sa.text(query), {"t": table}).scalar_one())


@pytest.fixture
def pg_empty(tmp_path: Path) -> Iterator[sa.Engine]:
    """An empty PostgreSQL database (no migration run)."""
    for url in make_database("postgresql", tmp_path):
        engine = db.create_engine(url, poolclass=sa.NullPool)
        yield engine
        engine.dispose()


def test_the_migration_partitions_a_database_with_rows_and_keeps_them(
    pg_empty: sa.Engine,
) -> None:
    _migrate_with_rows(pg_empty)


def _migrate_with_rows(engine: sa.Engine) -> None:
    this = this_month()
    migrate.upgrade(engine, "0014_polish")
    old, ancient = partitions.shift(this, -3), partitions.shift(this, -40)
    with engine.begin() as conn:
        pks = [_add(conn, this + timedelta(hours=1), keys=False)]
        pks += [_add(conn, old + timedelta(days=3), keys=False)]
        pks += [_add(conn, ancient + timedelta(days=1), keys=False)]
        last_track = conn.execute(sa.select(sa.func.max(m.tracks.c.id))).scalar_one()
        assert _kind(conn, "events") == "r"
    migrate.upgrade(engine)
    with engine.begin() as conn:
        assert _kind(conn, "events") == "p" and _kind(conn, "tracks") == "p"
        later = partitions.shift(this, 1)
        for table in ("events", "tracks"):
            assert {partitions.name_of(table, month) for month in (old, this, later)} | {
                f"{table}_default"
            } == _names(conn, table)
        where = _where(conn, "events")
        assert where == {
            pks[0]: partitions.name_of("events", this),
            pks[1]: partitions.name_of("events", old),
            pks[2]: "events_default",  # older than the months given a partition
        }
        keys = conn.execute(sa.select(m.event_keys.c.event_pk)).scalars().all()
        assert sorted(keys) == sorted(pks)
        assert _count(conn, m.deliveries) == 3 and _count(conn, m.track_events) == 3
        track = conn.execute(
            sa.insert(m.tracks).values(
                destination="x",
                status="pending",
                attempt=1,
                method="POST",
                url="u",
                created_at=this,
            )
        ).inserted_primary_key[0]
        assert track > last_track  # the ids go on from the same sequence
    migrate.downgrade(engine, "0014_polish")
    with engine.connect() as conn:
        assert _kind(conn, "events") == "r" and _kind(conn, "tracks") == "r"
        assert sorted(_where(conn, "events")) == sorted(pks)
        assert _count(conn, m.tracks) == 4
    migrate.upgrade(engine)
    with engine.connect() as conn:
        assert sorted(_where(conn, "events")) == sorted(pks)


async def test_ingest_stores_in_this_month_and_refuses_duplicates(pg_engine: sa.Engine) -> None:
    this = this_month()
    url = pg_engine.url.render_as_string(hide_password=False)
    headers = {"X-Write-Key": SERVER_KEY}
    body = {"type": "track", "name": "Lead", "event_id": "part-dup-1"}
    async with running_app(settings_for(url)) as client:
        first = (await client.http.post("/v1/events", json=body, headers=headers)).json()
        again = await client.http.post("/v1/events", json=body, headers=headers)
        batch = {"events": [body, {**body, "event_id": "part-2"}, {**body, "event_id": "part-2"}]}
        answered = await client.http.post("/v1/batch", json=batch, headers=headers)
    assert again.status_code == 202
    assert again.json()["duplicate"] is True and again.json()["id"] == first["id"]
    results = answered.json()["results"]
    assert [r.get("duplicate", False) for r in results] == [True, False, True]
    assert results[0]["id"] == first["id"] and results[1]["id"] == results[2]["id"]
    with pg_engine.connect() as conn:
        where = _where(conn, "events")
        assert set(where.values()) == {partitions.name_of("events", this)}
        assert len(where) == 2 and _count(conn, m.event_keys) == 2


def test_retention_drops_whole_old_months_and_prunes_the_boundary_row_by_row(
    pg_engine: sa.Engine,
) -> None:
    this = this_month()
    old, boundary = partitions.shift(this, -3), partitions.shift(this, -1)
    cutoff = boundary + timedelta(days=10)
    with pg_engine.begin() as conn:
        gone = [_add(conn, old + timedelta(days=d)) for d in (1, 2, 20)]
        gone += [_add(conn, boundary + timedelta(days=2))]
        gone += [_add(conn, datetime(2001, 1, 1, tzinfo=UTC))]  # the default partition's
        kept = [_add(conn, boundary + timedelta(days=20)), _add(conn, this + timedelta(hours=2))]
        assert set(_where(conn, "events").values()) >= {"events_default"}
        for month in (old, boundary):  # made while the default holds their rows: moved in
            for table in partitions.PARTITIONED:
                partitions.make(conn, table, month)
        assert _where(conn, "events")[gone[0]] == partitions.name_of("events", old)
    settings = RetentionSettings(events_days=30, tracks_days=30, otp_days=None, prune_chunk_rows=2)
    removed = retention.prune(pg_engine, settings, now=cutoff + timedelta(days=30))
    assert removed["events"] == 5 and removed["tracks"] == 5
    with pg_engine.connect() as conn:
        inherits = "SELECT count(*) FROM pg_inherits WHERE inhrelid = to_regclass(:name)"
        for table in ("events", "tracks"):
            assert partitions.name_of(table, old) not in _names(conn, table)
            assert partitions.name_of(table, boundary) in _names(conn, table)
            name = partitions.name_of(table, old)
            assert conn.execute(sa.text(inherits), {"name": name}).scalar_one() == 0
        assert sorted(_where(conn, "events")) == sorted(kept)
        for table, column in (
            (m.event_keys, m.event_keys.c.event_pk),
            (m.deliveries, m.deliveries.c.event_pk),
            (m.track_events, m.track_events.c.event_pk),
            (m.click_ids, m.click_ids.c.event_pk),
        ):
            left = conn.execute(sa.select(column)).scalars().all()
            assert sorted(left) == sorted(kept), table.name


def test_rows_on_either_side_of_a_month_boundary(pg_engine: sa.Engine) -> None:
    december = datetime(2030, 12, 1, tzinfo=UTC)
    january = partitions.shift(december, 1)
    assert january == datetime(2031, 1, 1, tzinfo=UTC)
    assert partitions.ensure(pg_engine, now=january - timedelta(microseconds=1)) == [
        "events_p2030_12",
        "events_p2031_01",
        "tracks_p2030_12",
        "tracks_p2031_01",
    ]
    assert partitions.ensure(pg_engine, now=december) == []  # there already
    with pg_engine.begin() as conn:
        last = _add(conn, january - timedelta(microseconds=1))
        first = _add(conn, january)
        where = _where(conn, "events")
        assert where[last] == "events_p2030_12" and where[first] == "events_p2031_01"
        names = [p.name for p in partitions.older(conn, "events", january)]
        assert "events_p2030_12" in names and "events_p2031_01" not in names
        earlier = [p.name for p in partitions.older(conn, "events", january - timedelta(seconds=1))]
        assert "events_p2030_12" not in earlier


def test_nothing_is_partitioned_elsewhere(database_url: str) -> None:
    engine = db.create_engine(database_url, poolclass=sa.NullPool)
    assert partitions.partitioned(engine.dialect) is (engine.dialect.name == "postgresql")
    if engine.dialect.name != "postgresql":
        assert partitions.ensure(engine) == []
    engine.dispose()


async def test_the_server_makes_missing_partitions_at_start(pg_engine: sa.Engine) -> None:
    this = partitions.name_of("events", this_month())
    partitions.drop(pg_engine, this)
    url = pg_engine.url.render_as_string(hide_password=False)
    async with running_app(settings_for(url)):
        for _ in range(200):
            with pg_engine.connect() as conn:
                if this in _names(conn, "events"):
                    break
            await asyncio.sleep(0.05)
    with pg_engine.connect() as conn:
        assert this in _names(conn, "events")
