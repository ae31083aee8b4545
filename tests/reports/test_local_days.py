"""Summing local days in SQL (`reports.local_days`) gives the numbers of the hourly path
(`reports.hourly`: every hour read back and put on `Period.day_of` in Python), across Europe/
Paris' change to summer and back to winter time, in a :30 zone, for data that starts and ends
in the middle of a local day, and for ranges reaching past it (each engine)."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from firstparty.reports import hourly, period, summary
from firstparty.store import db
from firstparty.store.models import delivery_rollups, event_rollups

# Rows from 13:00 UTC on 27 March (14:00 in Paris) to 09:00 UTC on 1 April, then from 10:00 UTC
# on 24 October to 16:00 UTC on 26 October: both of Paris' 2026 changes, a first and last day
# of data that are partial, and days with no row at all in between.
SPANS = [
    (datetime(2026, 3, 27, 13, tzinfo=UTC), datetime(2026, 4, 1, 9, tzinfo=UTC)),
    (datetime(2026, 10, 24, 10, tzinfo=UTC), datetime(2026, 10, 26, 16, tzinfo=UTC)),
]
KEYS = [
    ("k1", "www", "PageView", False, False, "google", "gclid"),
    ("k2", "www", "Purchase", False, True, "meta", "fbclid,gclid"),
    ("k3", "crm", "Lead", True, True, "", ""),
    ("k4", "crm", "Purchase", False, True, "", "gclid"),
]
PLACES = [
    ("meta", "delivered", "www"),
    ("meta", "pending", "www"),
    ("hook", "failed", "crm"),
    ("hook", "confirming", "crm"),
]


def _hours() -> list[datetime]:
    hours = []
    for first, last in SPANS:
        hour = first
        while hour <= last:
            hours.append(hour)
            hour += timedelta(hours=1)
    return hours


def _fill(engine: sa.Engine) -> None:
    """Each key and outbox place in two shards every hour of the spans, counts varying by hour."""
    event_rows: list[dict[str, Any]] = []
    outbox_rows: list[dict[str, Any]] = []
    for n, hour in enumerate(_hours()):
        for (k, (key, source, name, bot, converted, utm, kinds)), shard in itertools.product(
            enumerate(KEYS), (0, 4)
        ):
            event_rows.append(
                {
                    "hour": hour,
                    "key": key,
                    "shard": shard,
                    "source": source,
                    "name": name,
                    "bot": bot,
                    "converted": converted,
                    "utm_source": utm,
                    "utm_medium": "",
                    "utm_campaign": "",
                    "click_kinds": kinds,
                    "count": 1 + (7 * n + 3 * k + shard) % 11,
                }
            )
        for (p, (destination, status, source)), shard in itertools.product(
            enumerate(PLACES), (0, 2)
        ):
            outbox_rows.append(
                {
                    "hour": hour,
                    "destination": destination,
                    "status": status,
                    "source": source,
                    "shard": shard,
                    "count": 1 + (5 * n + p + shard) % 7,
                }
            )
    with engine.begin() as conn:
        conn.execute(event_rollups.insert(), event_rows)
        conn.execute(delivery_rollups.insert(), outbox_rows)


def _periods() -> list[period.Period]:
    """Ranges over each change and beyond the data, whole and cut mid-span, in three zones."""
    ranges = [
        (date(2026, 3, 26), date(2026, 4, 2)),  # the whole first span and a day either side
        (date(2026, 3, 29), date(2026, 3, 29)),  # the 23-hour day alone
        (date(2026, 3, 30), date(2026, 3, 31)),  # inside the span: its rows cut at both ends
        (date(2026, 10, 25), date(2026, 10, 26)),  # the 25-hour day and the data's last day
        (date(2026, 3, 1), date(2026, 11, 30)),  # both spans and the empty months between
    ]
    found = []
    for zone, (first, last) in itertools.product(
        ("Europe/Paris", "Asia/Kolkata", "America/Los_Angeles"), ranges
    ):
        found.append(period.Period(first, last, period.zone(zone), period.Preset.CUSTOM))
    paris = period.zone("Europe/Paris")
    found.append(
        period.Period(date(2026, 3, 26), date(2026, 4, 2), paris, period.Preset.CUSTOM, "crm")
    )
    return found


def test_local_days_in_sql_match_the_hourly_path(database_url: str) -> None:
    engine = db.create_engine(database_url)
    try:
        _fill(engine)
        for chosen, bots in itertools.product(_periods(), (False, True)):
            hourly_totals = hourly.totals_per_day(engine, period=chosen, include_bots=bots)
            hourly_names = hourly.events_per_day(engine, period=chosen, include_bots=bots)
            hourly_outcomes = hourly.outcomes_per_day(engine, period=chosen)
            assert summary.totals_per_day(engine, period=chosen, include_bots=bots) == (
                hourly_totals
            )
            assert summary.events_per_day(engine, period=chosen, include_bots=bots) == (
                hourly_names
            )
            assert summary.outcomes_per_day(engine, period=chosen) == hourly_outcomes
            # The page's one read of each rollup gives the same as the functions one by one.
            page = summary.event_reports(engine, period=chosen, include_bots=bots)
            assert page == summary.EventReports(
                hourly_totals,
                hourly_names,
                summary.conversions_by_utm_source(engine, period=chosen, include_bots=bots),
                summary.conversions_by_click_kind(engine, period=chosen, include_bots=bots),
            )
            outbox = summary.delivery_reports(engine, period=chosen)
            assert outbox == summary.DeliveryReports(
                summary.delivery_rates(engine, period=chosen), hourly_outcomes
            )
    finally:
        engine.dispose()


def test_the_hours_of_each_day_across_the_changes() -> None:
    """The SQL's day ranges are the hours `day_of` puts on each day: 23 on the day Paris moves to
    summer time, 25 on the day it moves back, and the first and last days' partial data counted
    where their local hours fall (14:00 on 27 March is still 27 March in Paris)."""
    paris = period.zone("Europe/Paris")
    chosen = period.Period(date(2026, 3, 27), date(2026, 10, 26), paris, period.Preset.CUSTOM)
    starts = chosen.day_starts
    assert (starts[0], starts[-1]) == (chosen.start, chosen.end)
    lengths = {
        day: (after - first) // timedelta(hours=1)
        for day, first, after in zip(chosen.days, starts, starts[1:], strict=False)
    }
    assert lengths[date(2026, 3, 29)] == 23 and lengths[date(2026, 10, 25)] == 25
    assert set(lengths.values()) == {23, 24, 25}
    for day, first, after in zip(chosen.days, starts, starts[1:], strict=False):
        assert chosen.day_of(first) == day and chosen.day_of(after - timedelta(hours=1)) == day
