"""List pages page by index: newest first, read in index order, never a sort of every row a
filter matches; the live view reads its minutes on the time index, whatever the filter (issue 14:
a page must cost the same at 10 million events as at 10,000)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from firstparty.alerts import figures
from firstparty.delivery import replay
from firstparty.reports import browse, funnel_spec, funnels, live, period, summary
from firstparty.store import db, models
from tests.conftest import settings_for

EVENTS = browse.EventFilters
LISTS: dict[str, Callable[[sa.Engine], object]] = {
    "events": lambda e: browse.events(e, EVENTS(), 51),
    "events by name": lambda e: browse.events(e, EVENTS(name="Purchase"), 51),
    "events by source": lambda e: browse.events(e, EVENTS(source="www"), 51),
    "events by source, next page": lambda e: browse.events(
        e, EVENTS(source="www", cursor="01JZZZZZZZZZZZZZZZZZZZZZZZ"), 51
    ),
    "tracks": lambda e: browse.tracks(e, browse.TrackFilters(), 51),
    "tracks by status": lambda e: browse.tracks(e, browse.TrackFilters(status="failed"), 51),
    "tracks by destination": lambda e: browse.tracks(e, browse.TrackFilters(destination="d"), 51),
    "tracks by destination and status": lambda e: browse.tracks(
        e, browse.TrackFilters(destination="d", status="failed"), 51
    ),
}


def plans(sqlite_url: str, call: Callable[[sa.Engine], object]) -> list[list[str]]:
    """SQLite's plan of each SELECT `call` runs (on an empty database: no statistics)."""
    engine = db.create_engine(sqlite_url)
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, sql: str, params: Any, context: Any, many: bool) -> None:
        if sql.lstrip().upper().startswith("SELECT"):
            seen.append((sql, params))

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        call(engine)
        assert seen
        with engine.connect() as conn:
            return [
                [row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params)]
                for sql, params in seen
            ]
    finally:
        engine.dispose()


@pytest.mark.parametrize("name", sorted(LISTS))
def test_a_list_reads_its_index_in_order(sqlite_url: str, name: str) -> None:
    for plan in plans(sqlite_url, LISTS[name]):
        assert not [step for step in plan if "TEMP B-TREE" in step], plan


def test_the_failures_page_reads_the_failed_rows_index(sqlite_url: str) -> None:
    """Its newest failed work in index order (partial: the failed rows only), and the failed
    work by destination and reason from their counts, not from the outbox: whatever its size."""
    settings = settings_for(sqlite_url)
    newest, *_ = plans(sqlite_url, lambda e: replay.failed(e, settings=settings, adapters={}))
    assert newest == ["SEARCH deliveries USING INDEX ix_deliveries_failed (status=?)"]
    [grouped] = plans(sqlite_url, summary.failures)
    assert grouped == ["SCAN failure_counts"], grouped


def test_the_source_silent_rule_counts_each_source_on_its_index(sqlite_url: str) -> None:
    """An alert round counts each source's events in the window from the index (source,
    received_at) alone, not every event of the window read and grouped."""
    rules = settings_for(sqlite_url).alerts

    def volumes(engine: sa.Engine) -> None:
        with engine.connect() as conn:
            figures._volumes(conn, datetime.now(UTC), rules, ["www", "crm"])

    _names, *counts = plans(sqlite_url, volumes)
    on_index = "SEARCH events USING COVERING INDEX ix_events_source_received_at"
    assert len(counts) == 4, counts  # now and a week ago, for each source
    assert all(len(plan) == 1 and plan[0].startswith(on_index) for plan in counts), counts


@pytest.mark.parametrize("filters", [live.Filters(name="Purchase"), live.Filters(type="page")])
def test_the_live_view_reads_the_minutes_it_shows(sqlite_url: str, filters: live.Filters) -> None:
    now = datetime.now(UTC)
    watch = live.Watch.starting(now, filters=filters)
    [events_plan] = plans(sqlite_url, lambda engine: live.poll(engine, watch, now))
    assert "SEARCH events USING INDEX ix_events_received_at (received_at>?)" in events_plan


def test_one_destinations_requests_come_newest_first_across_statuses(sqlite_url: str) -> None:
    engine = db.create_engine(sqlite_url)
    statuses = ["delivered", "failed", "skipped", "delivered", "test", "failed", "delivered"]
    now = datetime.now(UTC)
    rows = [
        {"destination": name, "status": status, "attempt": 1, "method": "POST", "url": "u"}
        | {"created_at": now}
        for status in statuses
        for name in ("a", "b")
    ]
    try:
        with engine.begin() as conn:
            conn.execute(sa.insert(models.tracks), rows)
        mine = [t["id"] for t in browse.tracks(engine, browse.TrackFilters(destination="a"), 4)]
        older = browse.tracks(engine, browse.TrackFilters(destination="a", cursor=str(mine[-1])), 9)
    finally:
        engine.dispose()
    assert mine == [13, 11, 9, 7]  # a's rows are the odd ids, whatever their status
    assert [t["id"] for t in older] == [5, 3, 1]


def test_a_funnel_reads_its_period_in_time_order(sqlite_url: str) -> None:
    """Not every event of the steps' names ever, sorted: the cap then bounds the pass."""
    funnel = funnel_spec.parse("checkout", ["event ViewContent", "event Purchase"], 24)
    chosen = period.parse({"range": "30d"}, default_zone="UTC", now=datetime.now(UTC))
    [events_plan, *_] = plans(
        sqlite_url, lambda engine: funnels.compute(engine, funnel=funnel, period=chosen)
    )
    assert events_plan[0].startswith("SEARCH events USING INDEX ix_events_occurred_at"), events_plan


def test_an_event_is_found_by_its_id_on_the_unique_index(sqlite_url: str) -> None:
    """The one index over event ids (event_id, source) finds an event by its id alone (0025:
    there is no second index on event_id), for the events list and the request log alike."""
    on_index = "SEARCH events USING INDEX sqlite_autoindex_events_2 (event_id=?)"
    by_id = browse.EventFilters(event_id="order-1")
    [pks, *_] = plans(sqlite_url, lambda e: browse.events(e, by_id, 51))
    assert pks == [on_index]
    [pks, *_] = plans(sqlite_url, lambda e: browse.tracks(e, browse.TrackFilters(event_id="o"), 51))
    assert pks == [on_index]


def test_an_events_outbox_rows_are_found_on_the_unique_key(sqlite_url: str) -> None:
    """An event's deliveries (its page, erase, retention) are read on the unique (event_pk,
    destination): 0026 dropped the index on event_pk alone that duplicated it."""
    outbox = models.deliveries
    query = sa.select(outbox).where(outbox.c.event_pk == "01JD").order_by(outbox.c.id)

    def read(engine: sa.Engine) -> None:
        with engine.connect() as conn:
            conn.execute(query).all()

    [plan] = plans(sqlite_url, read)
    assert plan[0] == "SEARCH deliveries USING INDEX sqlite_autoindex_deliveries_1 (event_pk=?)"


def test_an_alert_round_reads_each_destinations_newest_requests_on_the_index(
    sqlite_url: str,
) -> None:
    """destination_setup's newest answer of each destination: a bounded number of its newest
    requests of each status, newest first from (destination, status, id), never every request
    of the window (bench/growth: a tenth of a worker's time at 1,700 requests a second)."""
    now = datetime.now(UTC)
    [plan] = plans(
        sqlite_url,
        lambda e: figures.newest_answers(e, now=now, minutes=60, destinations=["a", "b"]),
    )
    on_tracks = [step for step in plan if "tracks" in step]
    on_index = (
        "SEARCH tracks USING INDEX ix_tracks_destination_status_id (destination=? AND status=?)"
    )
    assert len(on_tracks) == 2 * 7 and set(on_tracks) == {on_index}, plan
    assert not [step for step in plan if "TEMP B-TREE" in step], plan


def test_a_replay_preview_reads_the_outbox_alone(sqlite_url: str) -> None:
    """A replay's chunks (and the failures page's preview) read the destination's failed rows in
    id order from (destination, status) without touching `events`: joined to every event, each
    chunk matched all of the destination's failed rows first (207 ms for 250 of 7,515 on
    PostgreSQL)."""
    settings = settings_for(sqlite_url)
    found = plans(
        sqlite_url,
        lambda e: replay.preview(e, settings=settings, adapters={}, destination="d", limit=250),
    )
    steps = [step for plan in found for step in plan]
    assert not [step for step in steps if " events" in step], found
    chunk = "SEARCH deliveries USING INDEX ix_deliveries_destination_status"
    assert any(step.startswith(chunk) and "rowid>?" in step for step in steps), found
    assert not [step for step in steps if "TEMP B-TREE" in step], found
