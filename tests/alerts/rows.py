"""Figures put straight into the database for the alert rules, and a clock the test moves."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from firstparty import ids
from firstparty.store.models import deliveries, events, tracks

START = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


class Clock:
    """Now, moved only by the test."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def add_requests(
    engine: Engine, destination: str, *, delivered: int, failed: int, at: datetime
) -> None:
    """Outgoing requests in the log, as the worker records them."""
    rows = [
        {
            "destination": destination,
            "status": status,
            "attempt": 1,
            "method": "POST",
            "url": "http://127.0.0.1/x",
            "created_at": at,
        }
        for status, count in (("delivered", delivered), ("failed", failed))
        for _ in range(count)
    ]
    with engine.begin() as conn:
        conn.execute(sa.insert(tracks), rows)


def add_events(engine: Engine, source: str, count: int, *, at: datetime) -> list[str]:
    """Events received from `source` at `at`."""
    rows = [
        {
            "id": ids.new_id(),
            "source": source,
            "event_id": str(uuid.uuid4()),
            "type": "track",
            "name": "Lead",
            "occurred_at": at,
            "received_at": at,
            "request": {},
            "response": {},
            "user": {},
            "context": {},
            "consent": {},
        }
        for _ in range(count)
    ]
    with engine.begin() as conn:
        conn.execute(sa.insert(events), rows)
    return [str(r["id"]) for r in rows]


def add_due_delivery(engine: Engine, destination: str, *, due: datetime) -> None:
    """One pending delivery due at `due`."""
    (pk,) = add_events(engine, "crm", 1, at=due)
    row = {
        "event_pk": pk,
        "destination": destination,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": due,
        "occurred_at": due,
        "created_at": due,
        "updated_at": due,
    }
    with engine.begin() as conn:
        conn.execute(sa.insert(deliveries), [row])


def finish_deliveries(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.update(deliveries).values(status="delivered"))
