"""Operator reports: events per day, conversions by first touch, delivery health, failures.

The SQL is portable (SQLite, PostgreSQL, MariaDB/MySQL): plain GROUP BY, `date()` on the
timestamp, and JSON paths through SQLAlchemy's JSON operators. A conversion is an event that at
least one destination took (it has a row in the outbox).

Events flagged as a robot's (`events.bot`: crawlers, headless browsers) are left out of the
event counts and conversions unless `include_bots` is true.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from firstparty import platforms
from firstparty.delivery import outbox
from firstparty.delivery.outbox import DeliveryStatus
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


def events_per_day(
    engine: Engine, *, days: int = DAYS, now: datetime | None = None, include_bots: bool = False
) -> EventsPerDay:
    """Events by occurrence day and name over the last `days` days, today included."""
    start = window_start(now or datetime.now(UTC), days)
    day = sa.func.date(m.events.c.occurred_at).label("day")
    query = (
        sa.select(day, m.events.c.name, sa.func.count().label("n"))
        .where(m.events.c.occurred_at >= start, *_people_only(include_bots))
        .group_by(day, m.events.c.name)
    )
    with engine.connect() as conn:
        rows = [(_day(r.day), r.name, int(r.n)) for r in conn.execute(query)]
    names = sorted({name for _, name, _ in rows})
    counts = {(d, name): n for d, name, n in rows}
    span = [start.date() + timedelta(days=i) for i in range(days)]
    return EventsPerDay(names, [(d, [counts.get((d, name), 0) for name in names]) for d in span])


def _day(value: object) -> date:
    """`date()` answers a string on SQLite and a date elsewhere."""
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


def _people_only(include_bots: bool) -> list[sa.ColumnElement[bool]]:
    """The condition leaving out robots' events, unless they are asked for."""
    return [] if include_bots else [m.events.c.bot.is_(None)]


def _conversions_since(start: datetime, include_bots: bool) -> sa.Select[tuple[str | None]]:
    forwarded = sa.exists().where(m.deliveries.c.event_pk == m.events.c.id)
    return sa.select(m.events.c.visitor_id).where(
        m.events.c.occurred_at >= start, forwarded, *_people_only(include_bots)
    )


def conversions_by_utm_source(
    engine: Engine, *, days: int = DAYS, now: datetime | None = None, include_bots: bool = False
) -> list[Bucket]:
    """Conversions of the last `days` days by the visitor's first-touch utm_source."""
    start = window_start(now or datetime.now(UTC), days)
    converted = _conversions_since(start, include_bots).subquery()
    # Grouped outside: PostgreSQL does not match a JSON path with bound parameters in GROUP BY.
    sources = (
        sa.select(m.visitors.c.first_touch[("utm", "utm_source")].as_string().label("source"))
        .select_from(converted.outerjoin(m.visitors, m.visitors.c.id == converted.c.visitor_id))
        .subquery()
    )
    query = sa.select(sources.c.source, sa.func.count().label("n")).group_by(sources.c.source)
    with engine.connect() as conn:
        return _buckets((r.source or NONE, int(r.n)) for r in conn.execute(query))


def conversions_by_click_kind(
    engine: Engine, *, days: int = DAYS, now: datetime | None = None, include_bots: bool = False
) -> list[Bucket]:
    """Conversions of the last `days` days by the kinds of click id in the visitor's first touch.

    A first touch with two kinds (gclid and fbclid) counts once under each.
    """
    start = window_start(now or datetime.now(UTC), days)
    converted = _conversions_since(start, include_bots).subquery()
    ft = m.visitors.c.first_touch
    has = {kind: ft[("click_ids", kind)].as_string().is_not(None) for kind in platforms.CLICK_IDS}
    columns = [sa.func.sum(sa.case((cond, 1), else_=0)).label(kind) for kind, cond in has.items()]
    without = sa.and_(*(sa.not_(cond) for cond in has.values()))
    none = sa.func.sum(sa.case((without, 1), else_=0))
    query = sa.select(*columns, none.label("no_click")).select_from(
        converted.outerjoin(m.visitors, m.visitors.c.id == converted.c.visitor_id)
    )
    with engine.connect() as conn:
        row = conn.execute(query).mappings().one()
    pairs = [(kind, int(row[kind] or 0)) for kind in platforms.CLICK_IDS]
    return _buckets([*pairs, (NONE, int(row["no_click"] or 0))])


def _buckets(pairs: Iterable[tuple[str, int]]) -> list[Bucket]:
    merged: dict[str, int] = defaultdict(int)
    for label, count in pairs:
        merged[label] += count
    ranked = sorted(merged.items(), key=lambda item: (-item[1], item[0]))
    return [Bucket(label, count) for label, count in ranked if count]


def delivery_rates(
    engine: Engine, *, days: int = DAYS, now: datetime | None = None
) -> list[DeliveryRate]:
    """Outbox rows created in the last `days` days, per destination and status."""
    start = window_start(now or datetime.now(UTC), days)
    d = m.deliveries.c
    query = (
        sa.select(d.destination, d.status, sa.func.count().label("n"))
        .where(d.created_at >= start)
        .group_by(d.destination, d.status)
    )
    statuses: dict[str, dict[str, int]] = defaultdict(dict)
    with engine.connect() as conn:
        for row in conn.execute(query):
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
