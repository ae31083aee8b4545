"""Work inserted straight into the outbox (as ingest would), and small readers for assertions."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from firstparty import ids
from firstparty.delivery import failures, queue, tally, worker
from firstparty.destinations import registry
from firstparty.settings import Settings
from firstparty.store.models import deliveries, events, track_events, tracks

API_KEY = "fake-api-key-0123456789"


def fake_destination(receiver_url: str, name: str = "fake", **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "fake", "api_base": receiver_url, "api_key": API_KEY, **extra}


def add_events(
    engine: Engine,
    destinations: list[str],
    count: int = 1,
    *,
    name: str = "Lead",
    occurred_at: datetime | None = None,
) -> list[str]:
    """Insert `count` events and one pending delivery per destination (counted in the outbox's
    per-hour tally), as ingest does."""
    now = datetime.now(UTC)
    when = occurred_at or now
    event_rows, delivery_rows = [], []
    for _ in range(count):
        pk = ids.new_id()
        event_rows.append(
            {
                "id": pk,
                "source": "crm",
                "event_id": str(uuid.uuid4()),
                "type": "track",
                "name": name,
                "occurred_at": when,
                "received_at": now,
                "visitor_id": None,
                "user_id": None,
                "request": {"properties": {"value": 49.0, "currency": "USD"}},
                "response": {},
                "user": {"em": "a" * 64},
                "context": {"ip": "203.0.113.9"},
                "consent": {},
            }
        )
        for destination in destinations:
            delivery_rows.append(
                {
                    "event_pk": pk,
                    "destination": destination,
                    "status": "pending",
                    "attempts": 0,
                    "next_attempt_at": now,
                    "occurred_at": when,
                    "created_at": now,
                    "updated_at": now,
                }
            )
    with engine.begin() as conn:
        conn.execute(sa.insert(events), event_rows)
        conn.execute(sa.insert(deliveries), delivery_rows)
        tally.added(conn, delivery_rows)
    return [r["id"] for r in event_rows]


def set_status(
    conn: sa.Connection,
    status: str,
    *where: sa.ColumnElement[bool],
    last_error: str | None = None,
    **values: Any,
) -> None:
    """Put the outbox rows `where` picks (every row without) in `status` with `last_error` and
    `values`, their counts (delivery.tally, delivery.failures) moved as the outbox moves them: a
    test's shortcut past the worker's rounds."""
    d = deliveries.c
    columns = (d.id, d.created_at, d.destination, d.status, d.source, d.last_error)
    rows = conn.execute(sa.select(*columns).where(*where)).all()
    changed = {"status": status, "last_error": last_error, **values}
    conn.execute(sa.update(deliveries).where(*where).values(**changed))
    moves = []
    for r in rows:
        source, created = r.source or "", changed.get("created_at", r.created_at)
        before = (tally.hour(r.created_at), r.destination, r.status, source)
        moves.append((before, (tally.hour(created), r.destination, status, source)))
    tally.move(conn, moves)
    entered = [(r.destination, last_error) for r in rows if status == "failed"]
    failures.move(
        conn, entered, [(r.destination, r.last_error) for r in rows if r.status == "failed"]
    )


def rows(engine: Engine, table: sa.Table) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(sa.select(table).order_by(table.c[table.primary_key.columns.keys()[0]]))
        )


def delivery_rows(engine: Engine) -> list[Any]:
    return rows(engine, deliveries)


def track_rows(engine: Engine) -> list[Any]:
    return rows(engine, tracks)


def link_rows(engine: Engine) -> list[Any]:
    return rows(engine, track_events)


def event_ids(engine: Engine) -> dict[str, str]:
    """event pk -> event_id"""
    with engine.connect() as conn:
        return {r.id: r.event_id for r in conn.execute(sa.select(events.c.id, events.c.event_id))}


async def eventually(check: Callable[[], bool | Awaitable[bool]], timeout: float = 20.0) -> None:
    """Wait until `check` holds (a bound, not a timing assertion)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


def all_settled(engine: Engine, status: str = "delivered") -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        found = await asyncio.to_thread(delivery_rows, engine)
        return bool(found) and all(r.status == status for r in found)

    return check


# Every worker a test makes, stopped after the test whether it passed or not (conftest.py).
STARTED: list[worker.Worker] = []


def make_worker(settings: Settings, engine: Engine, **kwargs: Any) -> worker.Worker:
    made = worker.Worker(
        settings=settings,
        engine=engine,
        adapters=registry.adapters(settings.destinations),
        queue=queue.EmbeddedQueue(),
        **kwargs,
    )
    STARTED.append(made)
    return made
