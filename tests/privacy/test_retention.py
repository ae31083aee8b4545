"""Retention on all three engines: `prune` deletes what is older than each table's setting, in
bounded chunks, with the rows that hang on it; newer rows stay."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from firstparty.cli import main
from firstparty.privacy import retention
from firstparty.settings import RetentionSettings
from firstparty.store import db
from firstparty.store import models as m
from tests.conftest import running_app, settings_for
from tests.delivery.outbox import add_events

NOW = datetime.now(UTC)


def _count(engine: sa.Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def _age(engine: sa.Engine, days: int) -> None:
    """Make every row present now `days` old."""
    then = NOW - timedelta(days=days)
    with engine.begin() as conn:
        conn.execute(sa.update(m.events).values(received_at=then))
        conn.execute(sa.update(m.tracks).values(created_at=then))
        conn.execute(sa.update(m.otp_codes).values(created_at=then))
        conn.execute(sa.update(m.otp_attempts).values(created_at=then))


def _fill(engine: sa.Engine, count: int) -> None:
    pks = add_events(engine, ["fake"], count)
    with engine.begin() as conn:
        deliveries = dict(conn.execute(sa.select(m.deliveries.c.event_pk, m.deliveries.c.id)).all())
        for pk in pks:
            track = conn.execute(
                sa.insert(m.tracks).values(
                    destination="fake",
                    status="delivered",
                    attempt=1,
                    method="POST",
                    url="https://x.test",
                    created_at=NOW,
                )
            ).inserted_primary_key[0]
            conn.execute(
                sa.insert(m.track_events).values(
                    track_id=track, delivery_id=deliveries[pk], event_pk=pk, outcome="delivered"
                )
            )
            conn.execute(
                sa.insert(m.click_ids).values(
                    event_pk=pk, kind="gclid", value=f"c-{pk}", first_seen_at=NOW
                )
            )
        for i in range(count):
            conn.execute(
                sa.insert(m.otp_codes).values(
                    id=f"otp{i:04d}{pks[0][:10]}",
                    phone_key="k",
                    created_at=NOW,
                    expires_at=NOW,
                    attempts=0,
                )
            )
            conn.execute(sa.insert(m.otp_attempts).values(phone_key="k", created_at=NOW))


TABLES = (m.events, m.deliveries, m.tracks, m.track_events, m.click_ids, m.otp_codes)


def test_prune_deletes_only_rows_past_their_retention_in_chunks(database_url: str) -> None:
    engine = db.create_engine(database_url, poolclass=sa.NullPool)
    _fill(engine, 7)
    _age(engine, 45)  # past the request log's and the codes' 30 days, not the events' 400
    _fill(engine, 2)  # new
    settings = RetentionSettings(prune_chunk_rows=3)
    removed = retention.prune(engine, settings)
    assert removed == {
        "events": 0,
        "tracks": 7,
        "otp_codes": 7,
        "otp_attempts": 7,
        "admin_login_failures": 0,
        "admin_revocations": 0,
    }
    assert _count(engine, m.events) == 9 and _count(engine, m.tracks) == 2
    assert _count(engine, m.track_events) == 2 and _count(engine, m.otp_attempts) == 2

    _age(engine, 500)
    bounded = RetentionSettings(prune_chunk_rows=2, prune_max_rows=5)
    assert retention.prune(engine, bounded)["events"] == 5  # a bounded run; the next goes on
    assert retention.prune(engine, bounded)["events"] == 4
    for table in TABLES:
        assert _count(engine, table) == 0, table.name
    engine.dispose()


def test_none_keeps_rows_for_ever(sqlite_url: str) -> None:
    engine = db.create_engine(sqlite_url, poolclass=sa.NullPool)
    _fill(engine, 2)
    _age(engine, 5000)
    keep = RetentionSettings(events_days=None, tracks_days=None, otp_days=None)
    assert retention.prune(engine, keep) == {"admin_login_failures": 0, "admin_revocations": 0}
    assert _count(engine, m.events) == 2
    engine.dispose()


def test_prune_command(sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    engine = db.create_engine(sqlite_url, poolclass=sa.NullPool)
    _fill(engine, 3)
    _age(engine, 31)
    engine.dispose()
    config = f'database_url = "{sqlite_url}"\nsecret_key = "{"s" * 40}"\n'
    path = f"{tmp_path}/firstparty.toml"
    with open(path, "w") as f:
        f.write(config + "[retention]\ntracks_days = 30\n")
    assert main(["--config", path, "prune"]) == 0
    out = capsys.readouterr().out
    assert "pruned 3 tracks" in out and "pruned 0 events" in out


async def test_the_server_prunes_by_itself(sqlite_url: str) -> None:
    engine = db.create_engine(sqlite_url, poolclass=sa.NullPool)
    _fill(engine, 2)
    _age(engine, 31)
    engine.dispose()
    retention_now = {"prune_first_delay_seconds": 0, "prune_interval_hours": 24}
    async with running_app(settings_for(sqlite_url, retention=retention_now)) as client:
        for _ in range(100):
            if not client.rows(m.tracks):
                break
            await asyncio.sleep(0.02)
        assert client.rows(m.tracks) == [] and len(client.rows(m.events)) == 2
