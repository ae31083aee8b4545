"""Operator reports: events and conversions per day, conversions by first touch, delivery
outcomes per destination and day, failures.

Each takes a `period.Period`: local days in a time zone, optionally one source. They read the
hourly rollups, never the events: a report costs the same at a thousand events as at ten
million, and a local day is the UTC hours that start on it (`reports.period`), summed in the
database (`reports.local_days`). `event_reports` and `delivery_reports` give the page's reports
from one read of each rollup. A conversion is an event that a destination it went to maps to
one of its conversions (`events.converted`, see `reports.rollups` and docs/admin.md), not every
event forwarded. Delivery outcomes read the hourly outbox counts (`delivery.tally`, per
destination, status and the event's source) by the hour the outbox row was made. Failures read
the failed rows on their status index.

Events flagged as a robot's (`events.bot`: crawlers, headless browsers) are left out of the
event counts and conversions unless `include_bots` is true.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from firstparty import platforms
from firstparty.delivery import failures as failed_counts
from firstparty.delivery import outbox
from firstparty.delivery.outbox import DeliveryStatus
from firstparty.reports import local_days
from firstparty.reports import period as period_mod
from firstparty.store import models as m

DAYS = 14
NONE = "(none)"
# The outcomes charted per destination, in stacking order; `waiting` sums outbox.ACTIVE.
OUTCOMES = ("delivered", "test", "skipped", "failed", "waiting")


@dataclass(frozen=True)
class EventsPerDay:
    """Event counts per local day (oldest first) and event name; `counts[i]` follows `names`."""

    names: list[str]
    days: list[tuple[date, list[int]]]


@dataclass(frozen=True)
class DayTotals:
    """One local day: events (robots' left out unless asked) and conversions among them."""

    day: date
    events: int
    conversions: int


@dataclass(frozen=True)
class DestinationDays:
    """One destination's outbox rows by the local day they were made and outcome (`OUTCOMES`)."""

    destination: str
    days: list[tuple[date, dict[str, int]]]

    @property
    def total(self) -> int:
        return sum(sum(counts.values()) for _, counts in self.days)


@dataclass(frozen=True)
class Bucket:
    label: str
    count: int


@dataclass(frozen=True)
class DeliveryRate:
    """Outbox rows of one destination by status; the rate is delivered / (delivered + failed)."""

    destination: str
    statuses: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.statuses.values())

    @property
    def waiting(self) -> int:
        """Not settled yet: due, being sent, or awaiting the platform's final word."""
        return sum(self.statuses.get(status, 0) for status in outbox.ACTIVE)

    @property
    def success_rate(self) -> float | None:
        delivered = self.statuses.get(DeliveryStatus.DELIVERED, 0)
        done = delivered + self.statuses.get(DeliveryStatus.FAILED, 0)
        return delivered / done if done else None


@dataclass(frozen=True)
class FailureGroup:
    destination: str
    reason: str
    count: int


def window_start(now: datetime, days: int = DAYS) -> datetime:
    """Midnight UTC `days - 1` days before `now`: the first day of a `days`-day report."""
    today = now.astimezone(UTC).date()
    return datetime.combine(today - timedelta(days=days - 1), time(), tzinfo=UTC)


def default_period(now: datetime | None = None) -> period_mod.Period:
    """The last 14 UTC days, today included, all sources (what a bare /admin/reports shows)."""
    return period_mod.parse({}, default_zone="UTC", now=now or datetime.now(UTC))


def _chosen(period: period_mod.Period | None, now: datetime | None) -> period_mod.Period:
    return period or default_period(now)


def _event_filters(chosen: period_mod.Period, include_bots: bool) -> list[sa.ColumnElement[bool]]:
    """The event rollup rows of the period's source, robots' left out by default."""
    r = m.event_rollups.c
    where = []
    if chosen.source:
        where.append(r.source == chosen.source)
    if not include_bots:
        where.append(r.bot.is_(False))
    return where


def _event_where(chosen: period_mod.Period, include_bots: bool) -> list[sa.ColumnElement[bool]]:
    """The event rollup rows of the period's hours (and source), robots' left out by default."""
    r = m.event_rollups.c
    return [r.hour >= chosen.start, r.hour < chosen.end, *_event_filters(chosen, include_bots)]


def _event_days(
    engine: Engine,
    chosen: period_mod.Period,
    include_bots: bool,
    columns: Sequence[sa.ColumnElement[Any]],
) -> list[Any]:
    """The period's event counts by local day (`local_day`, an index into `chosen.days`)."""
    where = _event_filters(chosen, include_bots)
    with engine.connect() as conn:
        return local_days.rows(conn, m.event_rollups, chosen, columns, where)


def _names(chosen: period_mod.Period, rows: Iterable[Any]) -> EventsPerDay:
    counts: dict[tuple[int, str], int] = defaultdict(int)
    for row in rows:
        counts[(row.local_day, row.name)] += int(row.n)
    names = sorted({name for (_, name), n in counts.items() if n})
    return EventsPerDay(
        names,
        [(day, [counts.get((i, name), 0) for name in names]) for i, day in enumerate(chosen.days)],
    )


def _totals(chosen: period_mod.Period, rows: Iterable[Any]) -> list[DayTotals]:
    events = [0] * len(chosen.days)
    conversions = [0] * len(chosen.days)
    for row in rows:
        events[row.local_day] += int(row.n)
        if row.converted:
            conversions[row.local_day] += int(row.n)
    return [DayTotals(d, e, c) for d, e, c in zip(chosen.days, events, conversions, strict=True)]


def _by_utm_source(pairs: Iterable[tuple[str | None, int]]) -> list[Bucket]:
    return _buckets((utm_source or NONE, n) for utm_source, n in pairs)


def _by_click_kind(pairs: Iterable[tuple[str | None, int]]) -> list[Bucket]:
    """A first touch with two kinds (gclid and fbclid) counts once under each."""
    counts: dict[str, int] = {kind: 0 for kind in platforms.CLICK_IDS}
    counts[NONE] = 0
    for kinds, n in pairs:
        for kind in kinds.split(",") if kinds else [NONE]:
            counts[kind] = counts.get(kind, 0) + n
    return _buckets(counts.items())


def events_per_day(
    engine: Engine,
    *,
    period: period_mod.Period | None = None,
    now: datetime | None = None,
    include_bots: bool = False,
) -> EventsPerDay:
    """Events by local day of occurrence and name over the period's days."""
    chosen = _chosen(period, now)
    rows = _event_days(engine, chosen, include_bots, [m.event_rollups.c.name])
    return _names(chosen, rows)


def totals_per_day(
    engine: Engine,
    *,
    period: period_mod.Period | None = None,
    now: datetime | None = None,
    include_bots: bool = False,
) -> list[DayTotals]:
    """Events and conversions per local day of the period (the first chart)."""
    chosen = _chosen(period, now)
    rows = _event_days(engine, chosen, include_bots, [m.event_rollups.c.converted])
    return _totals(chosen, rows)


def _conversions(
    column: sa.Column[str], chosen: period_mod.Period, include_bots: bool
) -> sa.Select[str, Any]:
    """Converted events of the period summed by one first-touch column of the rollups."""
    r = m.event_rollups.c
    return (
        sa.select(column, sa.func.sum(r.count).label("n"))
        .where(*_event_where(chosen, include_bots), r.converted.is_(True))
        .group_by(column)
    )


def conversions_by_utm_source(
    engine: Engine,
    *,
    period: period_mod.Period | None = None,
    now: datetime | None = None,
    include_bots: bool = False,
) -> list[Bucket]:
    """Conversions of the period by the visitor's first-touch utm_source."""
    query = _conversions(m.event_rollups.c.utm_source, _chosen(period, now), include_bots)
    with engine.connect() as conn:
        return _by_utm_source((row[0], int(row.n or 0)) for row in conn.execute(query))


def conversions_by_click_kind(
    engine: Engine,
    *,
    period: period_mod.Period | None = None,
    now: datetime | None = None,
    include_bots: bool = False,
) -> list[Bucket]:
    """Conversions of the period by the kinds of click id in the visitor's first touch.

    A first touch with two kinds (gclid and fbclid) counts once under each.
    """
    query = _conversions(m.event_rollups.c.click_kinds, _chosen(period, now), include_bots)
    with engine.connect() as conn:
        return _by_click_kind((row[0], int(row.n or 0)) for row in conn.execute(query))


@dataclass(frozen=True)
class EventReports:
    """The four event reports of one period, from one read of the rollups."""

    totals: list[DayTotals]
    per_day: EventsPerDay
    by_source: list[Bucket]
    by_click: list[Bucket]


def event_reports(
    engine: Engine, *, period: period_mod.Period, include_bots: bool = False
) -> EventReports:
    """`totals_per_day`, `events_per_day` and the conversions by first touch, summed by local
    day, name, conversion and first touch in one read (what the report page shows)."""
    r = m.event_rollups.c
    columns = [r.name, r.converted, r.utm_source, r.click_kinds]
    rows = _event_days(engine, period, include_bots, columns)
    converted = [row for row in rows if row.converted]
    return EventReports(
        totals=_totals(period, rows),
        per_day=_names(period, rows),
        by_source=_by_utm_source((row.utm_source, int(row.n)) for row in converted),
        by_click=_by_click_kind((row.click_kinds, int(row.n)) for row in converted),
    )


def _buckets(pairs: Iterable[tuple[str, int]]) -> list[Bucket]:
    merged: dict[str, int] = defaultdict(int)
    for label, count in pairs:
        merged[label] += count
    ranked = sorted(merged.items(), key=lambda item: (-item[1], item[0]))
    return [Bucket(label, count) for label, count in ranked if count]


def _outbox_filters(chosen: period_mod.Period) -> list[sa.ColumnElement[bool]]:
    """The outbox count rows of the period's source."""
    d = m.delivery_rollups.c
    return [d.source == chosen.source] if chosen.source else []


def _outbox_days(engine: Engine, chosen: period_mod.Period) -> list[Any]:
    """The period's outbox counts by local day, destination and status."""
    d = m.delivery_rollups.c
    columns = [d.destination, d.status]
    with engine.connect() as conn:
        return local_days.rows(conn, m.delivery_rollups, chosen, columns, _outbox_filters(chosen))


def _rates(rows: Iterable[Any]) -> list[DeliveryRate]:
    totals: dict[tuple[str, str], int] = defaultdict(int)
    for row in rows:
        totals[(row.destination, row.status)] += int(row.n or 0)
    statuses: dict[str, dict[str, int]] = defaultdict(dict)
    for (destination, status), n in totals.items():
        if n:
            statuses[destination][status] = n
    return [DeliveryRate(name, statuses[name]) for name in sorted(statuses)]


def _outcomes(chosen: period_mod.Period, rows: Iterable[Any]) -> list[DestinationDays]:
    counts: dict[str, dict[int, dict[str, int]]] = defaultdict(lambda: defaultdict(dict))
    for row in rows:
        outcome = "waiting" if row.status in outbox.ACTIVE else str(row.status)
        cell = counts[row.destination][row.local_day]
        cell[outcome] = cell.get(outcome, 0) + int(row.n or 0)
    return [
        DestinationDays(
            name,
            [
                (day, {o: counts[name][i].get(o, 0) for o in OUTCOMES})
                for i, day in enumerate(chosen.days)
            ],
        )
        for name in sorted(counts)
        if any(any(c.values()) for c in counts[name].values())
    ]


def delivery_rates(
    engine: Engine, *, period: period_mod.Period | None = None, now: datetime | None = None
) -> list[DeliveryRate]:
    """Outbox rows made in the period, per destination and status."""
    chosen = _chosen(period, now)
    d = m.delivery_rollups.c
    query = (
        sa.select(d.destination, d.status, sa.func.sum(d.count).label("n"))
        .where(d.hour >= chosen.start, d.hour < chosen.end, *_outbox_filters(chosen))
        .group_by(d.destination, d.status)
    )
    with engine.connect() as conn:
        return _rates(conn.execute(query))


def outcomes_per_day(
    engine: Engine, *, period: period_mod.Period | None = None, now: datetime | None = None
) -> list[DestinationDays]:
    """Each destination's outbox rows per local day made and outcome (the second chart)."""
    chosen = _chosen(period, now)
    return _outcomes(chosen, _outbox_days(engine, chosen))


@dataclass(frozen=True)
class DeliveryReports:
    """`delivery_rates` and `outcomes_per_day` of one period, from one read of the rollups."""

    rates: list[DeliveryRate]
    outcomes: list[DestinationDays]


def delivery_reports(engine: Engine, *, period: period_mod.Period) -> DeliveryReports:
    """The outbox counts by destination and status, in all and per local day, in one read."""
    rows = _outbox_days(engine, period)
    return DeliveryReports(_rates(rows), _outcomes(period, rows))


def failures(engine: Engine) -> list[FailureGroup]:
    """Failed outbox rows (what a replay would take) by destination and last error, most first:
    read from their counts (delivery/failures.py), not from the rows."""
    groups = [
        FailureGroup(c.destination, c.reason or NONE, c.count) for c in failed_counts.counts(engine)
    ]
    return sorted(groups, key=lambda g: (g.destination, -g.count, g.reason))
