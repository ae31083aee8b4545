"""The failed work's counts by destination and error (delivery/failures.py, 0027_failure_counts)
equal a count of the failed rows after every change the outbox, a replay, an erase and a
retention prune make, on all three engines; the failures page and the replay preview read them."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from firstparty.delivery import failures, outbox, replay
from firstparty.destinations import registry
from firstparty.privacy import retention
from firstparty.reports import rollups, summary
from firstparty.settings import RetentionSettings
from firstparty.store import db, shards
from firstparty.store import models as m
from tests.delivery.outbox import add_events, fake_destination, set_status
from tests.delivery.test_worker import settings_with

Counts = Counter[tuple[str, str | None]]
FAILED = outbox.DeliveryStatus.FAILED


def _rows(engine: sa.Engine) -> Counts:
    """The failed rows, counted one by one."""
    d = m.deliveries.c
    with engine.connect() as conn:
        found = conn.execute(sa.select(d.destination, d.last_error).where(d.status == FAILED))
        return Counter((r.destination, r.last_error) for r in found)


def _counted(engine: sa.Engine) -> Counts:
    return Counter({(c.destination, c.reason): c.count for c in failures.counts(engine)})


def _fail(engine: sa.Engine, destination: str, errors: list[str | None]) -> list[outbox.Claim]:
    """Claim one due row per error and finish each failed with it (a worker's round)."""
    now = datetime.now(UTC)
    claims = outbox.claim(
        engine, destinations={destination}, now=now, lease_seconds=60, limit=len(errors)
    )
    assert len(claims) == len(errors)
    with engine.begin() as conn:
        finishes = [outbox.Finish(c, FAILED, now, e) for c, e in zip(claims, errors, strict=True)]
        outbox.finish(conn, finishes, now)
    return claims


def test_counts_follow_failures_replays_erasure_and_retention(database_url: str) -> None:
    engine = db.create_engine(database_url, poolclass=sa.NullPool)
    pks = add_events(engine, ["meta", "tiktok"], 12)
    claims = _fail(engine, "meta", ["400: bad", "400: bad", None, "x" * 600, "400: bad"])
    _fail(engine, "tiktok", ["401: token", "400: bad"])
    assert _counted(engine) == _rows(engine)
    assert _counted(engine)[("meta", "400: bad")] == 3
    assert _counted(engine)[("meta", "x" * m.LAST_ERROR_CHARS)] == 1  # as the row keeps it
    assert _counted(engine)[("meta", None)] == 1

    now = datetime.now(UTC)
    with engine.begin() as conn:  # a stale finish of failed work changes nothing
        outbox.finish(conn, [outbox.Finish(claims[0], FAILED, now, "late")], now)
    with engine.begin() as conn:  # a replay takes back two of meta's (one again: no-op)
        outbox.requeue(conn, [claims[0].id, claims[2].id], now)
        outbox.requeue(conn, [claims[0].id], now)
    assert _counted(engine) == _rows(engine)
    assert _counted(engine)[("meta", "400: bad")] == 2 and ("meta", None) not in _counted(engine)

    with engine.begin() as conn:  # an erase deletes the events of two failed rows
        erased = [c.event_pk for c in claims[1:4]]
        rollups.take(conn, erased)
        for table, column in ((m.deliveries, m.deliveries.c.event_pk), (m.events, m.events.c.id)):
            conn.execute(sa.delete(table).where(column.in_(erased)))
    assert _counted(engine) == _rows(engine) and sum(_counted(engine).values()) < 5

    with engine.begin() as conn:  # every event past its retention
        conn.execute(sa.update(m.events).values(received_at=now - timedelta(days=500)))
    assert retention.prune(engine, RetentionSettings(prune_chunk_rows=4))["events"] == 9
    assert _rows(engine) == Counter() == _counted(engine)
    assert len(pks) == 12
    engine.dispose()


def test_the_migration_counts_failed_rows_stored_before_it(database_url: str) -> None:
    engine = db.create_engine(database_url, poolclass=sa.NullPool)
    add_events(engine, ["meta"], 4)
    _fail(engine, "meta", ["400: bad", "400: bad", None])
    with engine.begin() as conn:
        conn.execute(sa.delete(m.failure_counts))
    assert _counted(engine) == Counter()
    with engine.begin() as conn:
        failures.backfill(conn)
    assert (
        _counted(engine) == _rows(engine) == Counter({("meta", "400: bad"): 2, ("meta", None): 1})
    )
    engine.dispose()


def test_the_page_groups_and_the_preview_read_the_counts(database_url: str) -> None:
    settings = settings_with(database_url, fake_destination("http://127.0.0.1:9"))
    adapters = registry.adapters(settings.destinations)
    engine = db.create_engine(database_url, poolclass=sa.NullPool)
    add_events(engine, ["fake"], 3)
    claims = _fail(engine, "fake", ["400: bad", "400: bad", "500: down"])
    groups = summary.failures(engine)
    assert [(g.destination, g.reason, g.count) for g in groups] == [
        ("fake", "400: bad", 2),
        ("fake", "500: down", 1),
    ]
    whole = replay.preview(engine, settings=settings, adapters=adapters, destination="fake")
    assert (whole.matched, whole.requeued) == (3, 3)
    # They are read from the counts: a count made wrong by hand shows on the page and in a
    # whole replay's preview, where a count of the rows would not; a filtered one counts rows.
    with engine.begin() as conn:
        f = m.failure_counts.c
        conn.execute(sa.update(m.failure_counts).where(f.reason == "500: down").values(count=41))
    assert sum(g.count for g in summary.failures(engine)) == 43
    whole = replay.preview(engine, settings=settings, adapters=adapters, destination="fake")
    assert whole.matched == 43
    one = replay.preview(
        engine, settings=settings, adapters=adapters, destination="fake", delivery_id=claims[0].id
    )
    assert one.matched == 1
    engine.dispose()


def test_folding_keeps_the_sums_in_shard_0_and_drops_keys_back_at_zero(database_url: str) -> None:
    engine = db.create_engine(database_url, poolclass=sa.NullPool)
    add_events(engine, ["meta"], 6)
    now = datetime.now(UTC)
    with engine.begin() as conn:  # counts as three workers' connections left them
        for shard, n in ((3, 2), (7, -1), (0, 1)):
            conn.info["rollup_shard"] = shard
            failures.move(
                conn, [("meta", "400: bad")] * max(n, 0), [("meta", "400: bad")] * -min(n, 0)
            )
        conn.info["rollup_shard"] = 5
        failures.move(conn, [("meta", "gone")], [])
        conn.info["rollup_shard"] = 0
        failures.move(conn, [], [("meta", "gone")])
    before = _counted(engine)
    assert before == Counter({("meta", "400: bad"): 2})
    shards.fold(engine, now=now)
    assert _counted(engine) == before
    kept = [(r.destination, r.reason, r.shard, r.count) for r in _all(engine)]
    assert kept == [("meta", "400: bad", 0, 2)]
    engine.dispose()


def _all(engine: sa.Engine) -> list[sa.Row[tuple[str, str | None, int, int]]]:
    f = m.failure_counts.c
    with engine.connect() as conn:
        return list(conn.execute(sa.select(f.destination, f.reason, f.shard, f.count)).all())


def test_a_replay_chunk_takes_a_destinations_first_failed_rows_in_index_order(
    database_url: str,
) -> None:
    """PostgreSQL: a replay's chunk (the failures page's preview: its first 250) takes one
    destination's failed rows in id order from `ix_deliveries_failed_destination_id`, without
    reading and sorting all of them (as it did through (destination, status): 50 ms at 5,000
    failed rows, and growing). The other engines' (destination, status) index ends with the row
    id (SQLite's plan: tests/store/test_list_plans.py)."""
    engine = db.create_engine(database_url, poolclass=sa.NullPool)
    if engine.dialect.name != "postgresql":
        engine.dispose()
        pytest.skip("PostgreSQL's plan")
    add_events(engine, ["refused", "hook"], 3000)
    with engine.begin() as conn:
        set_status(conn, "failed", m.deliveries.c.destination == "refused", last_error="400")
        conn.exec_driver_sql("ANALYZE deliveries")
    seen: list[tuple[str, object]] = []

    def record(conn: object, cursor: object, sql: str, params: object, *_: object) -> None:
        if "ORDER BY deliveries.id" in sql:
            seen.append((sql, params))

    sa.event.listen(engine, "before_cursor_execute", record)
    settings = settings_with(database_url)
    replay.preview(engine, settings=settings, adapters={}, destination="refused", limit=250)
    assert seen
    with engine.connect() as conn:
        sql, params = seen[0]
        plan = "\n".join(r[0] for r in conn.exec_driver_sql(f"EXPLAIN {sql}", params))  # type: ignore[arg-type]
    assert "ix_deliveries_failed_destination_id" in plan and "Sort" not in plan, plan
    engine.dispose()
