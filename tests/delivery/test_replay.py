"""Replay: failed work goes out again with its original event time; delivered work never does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from firstparty.delivery import replay
from firstparty.destinations import registry
from firstparty.store.models import replays
from tests.delivery.outbox import add_events, delivery_rows, fake_destination, make_worker
from tests.delivery.receiver import Receiver
from tests.delivery.test_worker import settings_with


async def test_replay_resends_failed_work_with_the_original_time(
    sqlite_engine: Engine, sqlite_url: str, receiver: Receiver
) -> None:
    settings = settings_with(sqlite_url, fake_destination(receiver.url, max_event_age_days=7))
    adapters = registry.adapters(settings.destinations)
    # Three days back, whole seconds: old enough to prove the original time is kept, whatever
    # today's date is, and inside the destination's 7-day window.
    then = (datetime.now(UTC) - timedelta(days=3)).replace(microsecond=0)
    add_events(sqlite_engine, ["fake"], 2, occurred_at=then)
    add_events(
        sqlite_engine, ["fake"], 1, occurred_at=datetime.now(UTC) - timedelta(days=6, hours=23)
    )
    receiver.fail(1, 400)
    work = make_worker(settings, sqlite_engine)
    await work.drain()
    assert {r.status for r in delivery_rows(sqlite_engine)} == {"failed"}

    seen: list[tuple[int, int]] = []
    # An hour later the 6d23h-old event is past the platform's 7 days: skipped with the reason.
    later = datetime.now(UTC) + timedelta(hours=2)
    result = replay.replay(
        sqlite_engine,
        settings=settings,
        adapters=adapters,
        now=later,
        progress=lambda d, t: seen.append((d, t)),
    )
    assert (result.matched, result.requeued, result.skipped_total) == (3, 2, 1)
    assert "older than 7 days" in next(iter(result.skipped))
    assert seen[-1] == (3, 3)
    # Requeued at `later`: make it due now, as time would.
    with sqlite_engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE deliveries SET next_attempt_at = :t WHERE status = 'pending'"),
            {"t": datetime.now(UTC).replace(tzinfo=None)},
        )
    await work.drain()
    stated = then.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert [e["occurred_at"] for e in receiver.accepted] == [stated] * 2

    sent = len(receiver.seen)
    again = replay.replay(sqlite_engine, settings=settings, adapters=adapters, now=later)
    await work.drain()
    assert (again.requeued, len(receiver.seen)) == (0, sent)  # delivered work is never resent
    with sqlite_engine.connect() as conn:
        audit = list(conn.execute(sa.select(replays)))
    assert [(a.requeued, a.skipped) for a in audit] == [(2, 1), (0, 1)]


async def test_replay_filters_and_dry_run(
    sqlite_engine: Engine, sqlite_url: str, receiver: Receiver
) -> None:
    dests = [fake_destination(receiver.url), fake_destination(receiver.url, name="other")]
    settings = settings_with(sqlite_url, *dests)
    adapters = registry.adapters(settings.destinations)
    add_events(sqlite_engine, ["fake", "other"], 2, name="Lead")
    add_events(sqlite_engine, ["fake"], 1, name="Purchase")
    receiver.fail(2, 400)
    work = make_worker(settings, sqlite_engine)
    await work.drain()
    await work.stop()
    assert {r.status for r in delivery_rows(sqlite_engine)} == {"failed"}

    dry = replay.replay(
        sqlite_engine, settings=settings, adapters=adapters, destination="fake", dry_run=True
    )
    assert (dry.matched, dry.requeued, dry.dry_run) == (3, 3, True)
    assert not dry.partial
    # The failures page's preview judges a bounded number of rows and counts them all.
    bounded = replay.preview(sqlite_engine, settings=settings, adapters=adapters, limit=2)
    assert (bounded.matched, bounded.checked, bounded.requeued, bounded.partial) == (5, 2, 2, True)
    with pytest.raises(ValueError, match="limit is for previews"):
        replay.replay(sqlite_engine, settings=settings, adapters=adapters, limit=2)
    assert {r.status for r in delivery_rows(sqlite_engine)} == {"failed"}
    only = replay.replay(
        sqlite_engine,
        settings=settings,
        adapters=adapters,
        destination="fake",
        event_name="Purchase",
    )
    assert (only.matched, only.requeued) == (1, 1)
    gone = replay.replay(sqlite_engine, settings=settings, adapters={}, destination="other")
    assert gone.skipped == {"destination other is not configured": 2}
