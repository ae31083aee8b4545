"""Operator reports: events per day, conversions by first touch, delivery health, failures.

Each takes a `period.Period` (local days in a time zone, optionally one source). Event counts
and conversions read the rollups (`reports.rollups`), never the events: a report costs the same
at a thousand events as at ten million. A conversion is an event that at
least one destination took (it has a row in the outbox). Delivery health reads the per-day
outbox counts (`delivery.tally`); failures read the failed rows on their status index.

Events flagged as a robot's (`events.bot`: crawlers, headless browsers) are left out of the
event counts and conversions unless `include_bots` is true.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from firstparty import platforms
from firstparty.delivery import outbox
from firstparty.delivery.outbox import DeliveryStatus
from firstparty.reports import period as period_mod
from firstparty.store import models as m

DAYS = 14
NONE = "(none)"


@dataclass(frozen=True)
class EventsPerDay:
    """Event counts per UTC day (oldest first) and event name; `counts[i]` follows `names`."""

    names: list[str]
    days: list[tuple[date, list[int]]]


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


def _within(
    period: period_mod.Period | None, now: datetime | None, *, source: bool = True
) -> tuple[period_mod.Period, list[sa.ColumnElement[bool]]]:
    """The period (default: `default_period`) and the rollup conditions selecting it."""
    chosen = period or default_period(now)
    r = m.event_rollups.c
    where = [r.day >= chosen.first, r.day <= chosen.last]
    if source and chosen.source:
        where.append(r.source == chosen.source)
    return chosen, where


def events_per_day(
    engine: Engine,
    *,
    period: period_mod.Period | None = None,
    now: datetime | None = None,
    include_bots: bool = False,
) -> EventsPerDay:
    """Events by occurrence day and name over the period's days."""
    chosen, where = _within(period, now)
    r = m.event_rollups.c
    query = (
        sa.select(r.day, r.name, sa.func.sum(r.count).label("n"))
        .where(*where, *_people_only(include_bots))
        .group_by(r.day, r.name)
    )
    with engine.connect() as conn:
        rows = [(_day(row.day), row.name, int(row.n)) for row in conn.execute(query) if row.n]
    names = sorted({name for _, name, _ in rows})
    counts = {(d, name): n for d, name, n in rows}
    return EventsPerDay(
        names, [(d, [counts.get((d, name), 0) for name in names]) for d in chosen.days]
    )


def _day(value: object) -> date:
    """A date, whatever the driver answers (SQLite may give a string)."""
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


def _people_only(include_bots: bool) -> list[sa.ColumnElement[bool]]:
    """The condition leaving out robots' events, unless they are asked for."""
    return [] if include_bots else [m.event_rollups.c.bot.is_(False)]


def _conversions(
    column: sa.Column[str], where: list[sa.ColumnElement[bool]], include_bots: bool
) -> sa.Select[str, Any]:
    """Converted events of the period summed by one first-touch column of the rollups."""
    r = m.event_rollups.c
    return (
        sa.select(column, sa.func.sum(r.count).label("n"))
        .where(*where, r.converted.is_(True), *_people_only(include_bots))
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
    _, where = _within(period, now)
    query = _conversions(m.event_rollups.c.utm_source, where, include_bots)
    with engine.connect() as conn:
        return _buckets((row[0] or NONE, int(row.n or 0)) for row in conn.execute(query))


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
    _, where = _within(period, now)
    query = _conversions(m.event_rollups.c.click_kinds, where, include_bots)
    counts: dict[str, int] = {kind: 0 for kind in platforms.CLICK_IDS}
    counts[NONE] = 0
    with engine.connect() as conn:
        for row in conn.execute(query):
            for kind in row[0].split(",") if row[0] else [NONE]:
                counts[kind] = counts.get(kind, 0) + int(row.n or 0)
    return _buckets(counts.items())


def _buckets(pairs: Iterable[tuple[str, int]]) -> list[Bucket]:
    merged: dict[str, int] = defaultdict(int)
    for label, count in pairs:
        merged[label] += count
    ranked = sorted(merged.items(), key=lambda item: (-item[1], item[0]))
    return [Bucket(label, count) for label, count in ranked if count]


def delivery_rates(
    engine: Engine, *, period: period_mod.Period | None = None, now: datetime | None = None
) -> list[DeliveryRate]:
    """Outbox rows created in the period, per destination and status (every source)."""
    chosen = period or default_period(now)
    d = m.delivery_rollups.c
    query = (
        sa.select(d.destination, d.status, sa.func.sum(d.count).label("n"))
        .where(d.day >= chosen.first, d.day <= chosen.last)
        .group_by(d.destination, d.status)
    )
    statuses: dict[str, dict[str, int]] = defaultdict(dict)
    with engine.connect() as conn:
        for row in conn.execute(query):
            if row.n:
                statuses[row.destination][row.status] = int(row.n)
    return [DeliveryRate(name, statuses[name]) for name in sorted(statuses)]


def failures(engine: Engine) -> list[FailureGroup]:
    """Failed outbox rows (what a replay would take) by destination and last error, most first."""
    d = m.deliveries.c
    query = (
        sa.select(d.destination, d.last_error, sa.func.count().label("n"))
        .where(d.status == DeliveryStatus.FAILED)
        .group_by(d.destination, d.last_error)
    )
    with engine.connect() as conn:
        groups = [
            FailureGroup(r.destination, r.last_error or NONE, int(r.n)) for r in conn.execute(query)
        ]
    return sorted(groups, key=lambda g: (g.destination, -g.count, g.reason))
