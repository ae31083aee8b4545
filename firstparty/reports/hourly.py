"""The summary reports summed hour by hour in Python: how `summary` worked before it summed
local days in SQL (`local_days`), kept as the reference it is checked against.

Each row of the rollups' GROUP BY hour comes back, and `Period.day_of` puts it on its local
day. The numbers are `summary`'s, by definition; tests/reports/test_local_days.py and
bench/reports.py compare the two. About 24 times more rows to read and decode than `summary`:
no page uses it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from firstparty.delivery import outbox
from firstparty.reports import summary
from firstparty.reports.period import Period
from firstparty.store import models as m


def _day_of(period: Period) -> Callable[[datetime], date]:
    """`period.day_of`, worked out once per hour (a report reads each hour once per name)."""
    days: dict[datetime, date] = {}

    def day_of(hour: datetime) -> date:
        day = days.get(hour)
        if day is None:
            day = days[hour] = period.day_of(hour)
        return day

    return day_of


def _event_where(period: Period, include_bots: bool) -> list[sa.ColumnElement[bool]]:
    r = m.event_rollups.c
    where = [r.hour >= period.start, r.hour < period.end]
    if period.source:
        where.append(r.source == period.source)
    if not include_bots:
        where.append(r.bot.is_(False))
    return where


def events_per_day(
    engine: Engine, *, period: Period, include_bots: bool = False
) -> summary.EventsPerDay:
    r = m.event_rollups.c
    query = (
        sa.select(r.hour, r.name, sa.func.sum(r.count).label("n"))
        .where(*_event_where(period, include_bots))
        .group_by(r.hour, r.name)
    )
    counts: dict[tuple[date, str], int] = defaultdict(int)
    day_of = _day_of(period)
    with engine.connect() as conn:
        for row in conn.execute(query):
            counts[(day_of(row.hour), row.name)] += int(row.n or 0)
    names = sorted({name for (_, name), n in counts.items() if n})
    return summary.EventsPerDay(
        names, [(d, [counts.get((d, name), 0) for name in names]) for d in period.days]
    )


def totals_per_day(
    engine: Engine, *, period: Period, include_bots: bool = False
) -> list[summary.DayTotals]:
    r = m.event_rollups.c
    query = (
        sa.select(r.hour, r.converted, sa.func.sum(r.count).label("n"))
        .where(*_event_where(period, include_bots))
        .group_by(r.hour, r.converted)
    )
    events: dict[date, int] = defaultdict(int)
    conversions: dict[date, int] = defaultdict(int)
    day_of = _day_of(period)
    with engine.connect() as conn:
        for row in conn.execute(query):
            day, n = day_of(row.hour), int(row.n or 0)
            events[day] += n
            if row.converted:
                conversions[day] += n
    return [summary.DayTotals(d, events.get(d, 0), conversions.get(d, 0)) for d in period.days]


def outcomes_per_day(engine: Engine, *, period: Period) -> list[summary.DestinationDays]:
    d = m.delivery_rollups.c
    where = [d.hour >= period.start, d.hour < period.end]
    if period.source:
        where.append(d.source == period.source)
    query = (
        sa.select(d.hour, d.destination, d.status, sa.func.sum(d.count).label("n"))
        .where(*where)
        .group_by(d.hour, d.destination, d.status)
    )
    counts: dict[str, dict[date, dict[str, int]]] = defaultdict(lambda: defaultdict(dict))
    day_of = _day_of(period)
    with engine.connect() as conn:
        for row in conn.execute(query):
            outcome = "waiting" if row.status in outbox.ACTIVE else str(row.status)
            cell = counts[row.destination][day_of(row.hour)]
            cell[outcome] = cell.get(outcome, 0) + int(row.n or 0)
    return [
        summary.DestinationDays(
            name,
            [
                (day, {o: counts[name][day].get(o, 0) for o in summary.OUTCOMES})
                for day in period.days
            ],
        )
        for name in sorted(counts)
        if any(any(c.values()) for c in counts[name].values())
    ]
