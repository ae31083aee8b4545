"""0025_event_id_key: one index over event ids, (event_id, source), on every engine; the events
stored before it and the outbox rows naming them are kept, duplicates still refused, and the
downgrade puts the two indexes of before back."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from firstparty.store import db, migrate, partitions

BEFORE = "0024_request_bytes"
AT = datetime(2026, 11, 29, 16, tzinfo=UTC).replace(tzinfo=None)
EVENT = {"source": "www", "event_id": "order-1", "type": "track", "name": "Purchase",
         "occurred_at": AT, "received_at": AT, "request": "{}", "response": "{}",
         "user": "{}", "context": "{}", "consent": "{}"}  # fmt: skip
DELIVERY = {"destination": "meta", "status": "pending", "attempts": 0, "next_attempt_at": AT,
            "occurred_at": AT, "created_at": AT, "updated_at": AT}  # fmt: skip


def _store(conn: sa.Connection, pk: str, source: str = "www") -> None:
    """An event as the writer stores it (`event_keys` first where events is partitioned)."""
    if partitions.partitioned(conn.dialect):
        keys = sa.table("event_keys", *map(sa.column, ("source", "event_id", "event_pk")))
        conn.execute(keys.insert().values(source=source, event_id="order-1", event_pk=pk))
    events = sa.table("events", *map(sa.column, ["id", *EVENT]))
    conn.execute(events.insert().values(EVENT | {"id": pk, "source": source}))


def _kept(engine: sa.Engine) -> list[Any]:
    with engine.connect() as conn:
        ids = conn.exec_driver_sql("SELECT id FROM events ORDER BY id").all()
        outbox = conn.exec_driver_sql("SELECT event_pk, destination FROM deliveries").all()
        return [ids, outbox]


def _event_id_indexes(engine: sa.Engine) -> list[tuple[str | None, ...]]:
    """The columns of every index and unique key that holds event_id (event_keys' primary key
    on PostgreSQL, where events has none; MySQL lists a unique key as an index too)."""
    inspector = sa.inspect(engine)
    if engine.dialect.name == "postgresql":
        found = [inspector.get_pk_constraint("event_keys")["constrained_columns"]]
    else:
        found = [u["column_names"] for u in inspector.get_unique_constraints("events")]
    found += [ix["column_names"] for ix in inspector.get_indexes("events")]
    return sorted({tuple(columns) for columns in found if "event_id" in columns})


def test_one_index_over_event_ids_rows_kept_both_ways(database_url: str) -> None:
    engine = db.create_engine(database_url, poolclass=sa.NullPool)
    try:
        migrate.downgrade(engine, BEFORE)
        with engine.begin() as conn:
            _store(conn, "01JDAAAAAAAAAAAAAAAAAAAAAA")
            conn.execute(
                sa.table("deliveries", *map(sa.column, ["event_pk", *DELIVERY])).insert(),
                [DELIVERY | {"event_pk": "01JDAAAAAAAAAAAAAAAAAAAAAA"}],
            )
        kept = _kept(engine)
        assert _event_id_indexes(engine) == [("event_id",), ("source", "event_id")]
        migrate.upgrade(engine)
        assert _kept(engine) == kept and _event_id_indexes(engine) == [("event_id", "source")]
        with engine.begin() as conn:  # the same id from another source is another event
            _store(conn, "01JDBBBBBBBBBBBBBBBBBBBBBB", source="crm")
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
            _store(conn, "01JDCCCCCCCCCCCCCCCCCCCCCC", source="crm")
        migrate.downgrade(engine, BEFORE)
        assert _event_id_indexes(engine) == [("event_id",), ("source", "event_id")]
        assert len(_kept(engine)[0]) == 2
    finally:
        engine.dispose()
