"""0012_reports and 0016_reports_source on a database with data: the daily counts become
hourly ones counted from the stored events and outbox rows, what the daily rows held beyond
them (pruned events) is kept at 00:00 UTC of its day with the source "" (unknown), each outbox
row gets its event's source, and the downgrade sums the hours back into days."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from firstparty.store import db, migrate
from firstparty.store.models import deliveries, delivery_rollups, event_rollups
from tests.conftest import SERVER_KEY, running_app, settings_for
from tests.delivery.outbox import fake_destination

BEFORE = "0011_audiences"
PRUNED_DAY = date(2026, 1, 5)


def _hourly(engine: sa.Engine) -> tuple[Counter[tuple[Any, ...]], Counter[tuple[Any, ...]]]:
    with engine.connect() as conn:
        events: Counter[tuple[Any, ...]] = Counter()
        for r in conn.execute(sa.select(event_rollups)):
            events[(r.hour, r.source, r.name, bool(r.converted))] += int(r.count)
        outbox: Counter[tuple[Any, ...]] = Counter()
        for r in conn.execute(sa.select(delivery_rollups)):
            outbox[(r.hour, r.destination, r.status)] += int(r.count)
    return +events, +outbox


def _add_pruned_days(engine: sa.Engine) -> None:
    """Counts of events long pruned: only the daily rows know them."""
    days = sa.table("event_rollups", *(sa.column(c) for c in ("day", "key", "shard", "source",
        "name", "bot", "converted", "utm_source", "utm_medium", "utm_campaign", "click_kinds",
        "count")))  # fmt: skip
    outbox = sa.table(
        "delivery_rollups",
        *(sa.column(c) for c in ("day", "destination", "status", "shard", "count")),
    )
    row = {"day": PRUNED_DAY, "key": "k" * 64, "source": "old", "name": "Purchase", "bot": False,
           "converted": True, "utm_source": "", "utm_medium": "", "utm_campaign": "",
           "click_kinds": ""}  # fmt: skip
    with engine.begin() as conn:
        conn.execute(
            sa.insert(days), [row | {"shard": 3, "count": 4}, row | {"shard": 9, "count": 3}]
        )
        conn.execute(
            sa.insert(outbox),
            [
                {
                    "day": PRUNED_DAY,
                    "destination": "fake",
                    "status": "delivered",
                    "shard": 1,
                    "count": 7,
                }
            ],
        )


async def test_the_daily_counts_become_hourly(database_url: str) -> None:
    now = datetime.now(UTC)
    settings = settings_for(database_url, destinations=[fake_destination("http://127.0.0.1:9")])
    async with running_app(settings) as app:
        for i, (name, hours_ago) in enumerate(
            [("Lead", 1), ("page", 1), ("Lead", 26), ("Lead", 50)]
        ):
            at = (now - timedelta(hours=hours_ago)).isoformat()
            body = {"type": "track", "name": name, "event_id": f"e{i}", "timestamp": at}
            if name == "page":
                body = {"type": "page", "url": "https://www.example.test/", "event_id": f"e{i}",
                        "timestamp": at, "user_id": "u1"}  # fmt: skip
            answer = await app.http.post(
                "/v1/events", json=body | {"user_id": "u1"}, headers={"X-Write-Key": SERVER_KEY}
            )
            assert answer.status_code == 202, answer.text
    engine = db.create_engine(database_url, poolclass=sa.NullPool)
    events, outbox = _hourly(engine)
    assert sum(events.values()) == 4 and sum(n for k, n in events.items() if k[3]) == 3
    assert sum(outbox.values()) == 4

    migrate.downgrade(engine, BEFORE)
    _add_pruned_days(engine)
    migrate.upgrade(engine)

    midnight = datetime(2026, 1, 5, tzinfo=UTC)
    again_events, again_outbox = _hourly(engine)
    assert again_events == events + Counter({(midnight, "old", "Purchase", True): 7})
    assert again_outbox == outbox + Counter({(midnight, "fake", "delivered"): 7})
    with engine.connect() as conn:  # 0016: each count has its events' source; pruned ones ""
        rows = conn.execute(sa.select(delivery_rollups.c.source, delivery_rollups.c["count"]))
        by_source = Counter[str]()
        for source, n in rows:
            by_source[source] += int(n)
        stamped = conn.execute(sa.select(deliveries.c.source)).scalars().all()
    assert +by_source == Counter({"crm": 4, "": 7}) and stamped == ["crm"] * 4
    engine.dispose()
