"""0020_rollups_clustered on SQLite: the hourly report counts become WITHOUT ROWID tables (rows
in primary key order) and back on downgrade, every row kept each way."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from firstparty.store import db, migrate
from firstparty.store.models import delivery_rollups, event_rollups

BEFORE = "0019_gfollow"
HOUR = datetime(2026, 11, 29, 7, tzinfo=UTC)


def _fill(engine: sa.Engine) -> None:
    row = {"hour": HOUR, "source": "www", "name": "Purchase", "bot": False, "converted": True,
           "utm_source": "google", "utm_medium": "", "utm_campaign": "",
           "click_kinds": "gclid"}  # fmt: skip
    outbox = {"hour": HOUR, "destination": "meta", "status": "delivered", "source": "www"}
    with engine.begin() as conn:
        conn.execute(
            event_rollups.insert(),
            [
                row | {"key": "a" * 64, "shard": 0, "count": 5},
                row | {"key": "b" * 64, "shard": 2, "count": 3},
            ],
        )
        conn.execute(delivery_rollups.insert(), [outbox | {"shard": 1, "count": 7}])


def _rows(engine: sa.Engine) -> list[Any]:
    with engine.connect() as conn:
        return [sorted(conn.execute(sa.select(t)).all()) for t in (event_rollups, delivery_rollups)]


def _without_rowid(engine: sa.Engine) -> set[bool]:
    with engine.connect() as conn:
        found = conn.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE name IN ('event_rollups', 'delivery_rollups')"
        )
        return {"WITHOUT ROWID" in sql for (sql,) in found}


def test_the_rollups_are_stored_in_key_order_and_back(tmp_path: Path) -> None:
    engine = db.create_engine(f"sqlite:///{tmp_path / 'firstparty.db'}")
    try:
        migrate.upgrade(engine, BEFORE)
        _fill(engine)
        kept = _rows(engine)
        assert _without_rowid(engine) == {False}
        migrate.upgrade(engine)
        assert _without_rowid(engine) == {True} and _rows(engine) == kept
        migrate.downgrade(engine, BEFORE)
        assert _without_rowid(engine) == {False} and _rows(engine) == kept
    finally:
        engine.dispose()
