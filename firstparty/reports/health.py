"""The delivery health and match quality reports, read from their rollups (`delivery.health`).

Per destination and event name over a period: settlements by outcome and code, the latency
percentiles from the fixed-bucket histogram, and the share of accepted events carrying each
identifier, beside the platform's own latest verdict (`platform_verdicts`). A few hundred rows
whatever the number of events.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from firstparty.delivery import health
from firstparty.delivery.health import Result
from firstparty.identity import match_keys
from firstparty.reports import export
from firstparty.reports.period import Period
from firstparty.store.models import (
    delivery_latency,
    delivery_outcomes,
    match_rollups,
    platform_verdicts,
)

Key = tuple[str, str]  # (destination, event name)


@dataclass
class HealthRow:
    """One destination and event name over the period."""

    destination: str
    event_name: str
    results: dict[str, int] = field(default_factory=dict)  # Result -> settlements
    codes: dict[str, dict[str, int]] = field(default_factory=dict)  # Result -> code -> count
    latency: list[int] = field(default_factory=lambda: [0] * (len(health.BUCKETS_MS) + 1))

    @property
    def sent(self) -> int:
        """Events carried by a request to the platform (every attempt counts)."""
        return sum(self.latency)

    def count(self, result: str) -> int:
        return self.results.get(result, 0)

    @property
    def p50(self) -> float | None:
        return percentile(self.latency, 0.50)

    @property
    def p95(self) -> float | None:
        return percentile(self.latency, 0.95)


def percentile(counts: list[int], q: float) -> float | None:
    """The q-quantile (ms) of a histogram over `health.BUCKETS_MS`: linear inside the bucket it
    falls in (as Prometheus' histogram_quantile); the open last bucket gives its lower bound."""
    total = sum(counts)
    if not total:
        return None
    rank = q * total
    seen = 0
    for index, n in enumerate(counts):
        if n and seen + n >= rank:
            if index == len(health.BUCKETS_MS):
                return float(health.BUCKETS_MS[-1])
            low = 0.0 if index == 0 else float(health.BUCKETS_MS[index - 1])
            high = float(health.BUCKETS_MS[index])
            return low + (high - low) * (rank - seen) / n
        seen += n
    return float(health.BUCKETS_MS[-1])


def _window(table: sa.Table, period: Period) -> list[sa.ColumnElement[bool]]:
    where = [table.c.hour >= period.start, table.c.hour < period.end]
    if period.source:
        where.append(table.c.source == period.source)
    return where


def delivery_health(engine: Engine, *, period: Period) -> list[HealthRow]:
    """Every destination and event name with a settlement in the period, sorted."""
    o, lat = delivery_outcomes.c, delivery_latency.c
    outcomes = (
        sa.select(o.destination, o.event_name, o.outcome, o.code, sa.func.sum(o.count).label("n"))
        .where(*_window(delivery_outcomes, period))
        .group_by(o.destination, o.event_name, o.outcome, o.code)
    )
    latency = (
        sa.select(lat.destination, lat.event_name, lat.bucket, sa.func.sum(lat.count).label("n"))
        .where(*_window(delivery_latency, period))
        .group_by(lat.destination, lat.event_name, lat.bucket)
    )
    rows: dict[Key, HealthRow] = {}

    def row(destination: str, name: str) -> HealthRow:
        return rows.setdefault((destination, name), HealthRow(destination, name))

    with engine.connect() as conn:
        for r in conn.execute(outcomes):
            found, n = row(r.destination, r.event_name), int(r.n or 0)
            found.results[r.outcome] = found.results.get(r.outcome, 0) + n
            codes = found.codes.setdefault(r.outcome, {})
            codes[r.code] = codes.get(r.code, 0) + n
        for b in conn.execute(latency):
            row(b.destination, b.event_name).latency[int(b.bucket)] += int(b.n or 0)
    return [rows[key] for key in sorted(rows)]


@dataclass
class MatchRow:
    """Accepted events of one destination and event name, and how many carried each key."""

    destination: str
    event_name: str
    events: int = 0
    carried: dict[str, int] = field(default_factory=dict)

    def share(self, key: str) -> float | None:
        return self.carried.get(key, 0) / self.events if self.events else None


def match_quality(engine: Engine, *, period: Period) -> list[MatchRow]:
    """Every destination and event name with an accepted event in the period, sorted."""
    m = match_rollups.c
    query = (
        sa.select(m.destination, m.event_name, m.key, sa.func.sum(m.count).label("n"))
        .where(*_window(match_rollups, period))
        .group_by(m.destination, m.event_name, m.key)
    )
    rows: dict[Key, MatchRow] = {}
    with engine.connect() as conn:
        for r in conn.execute(query):
            found = rows.setdefault((r.destination, r.event_name), MatchRow(*(r[0], r[1])))
            if r.key == health.ALL:
                found.events += int(r.n or 0)
            else:
                found.carried[r.key] = int(r.n or 0)
    return [rows[key] for key in sorted(rows)]


@dataclass(frozen=True)
class VerdictView:
    """The platform's latest verdict on one of its event names ("" for all of them)."""

    destination: str
    event_name: str
    metric: str
    value: str
    detail: str
    day: date
    fetched_at: datetime


def latest_verdicts(engine: Engine) -> dict[Key, list[VerdictView]]:
    """Per (destination, platform event name): the latest verdict of each metric."""
    v = platform_verdicts.c
    latest = (
        sa.select(v.destination, v.event_name, v.metric, sa.func.max(v.day).label("day"))
        .group_by(v.destination, v.event_name, v.metric)
        .subquery()
    )
    query = sa.select(platform_verdicts).join(
        latest,
        sa.and_(
            v.destination == latest.c.destination,
            v.event_name == latest.c.event_name,
            v.metric == latest.c.metric,
            v.day == latest.c.day,
        ),
    )
    found: dict[Key, list[VerdictView]] = defaultdict(list)
    with engine.connect() as conn:
        for r in conn.execute(query):
            view = VerdictView(
                r.destination,
                r.event_name,
                r.metric,
                r.value,
                r.detail,
                health.day_of(r.day),
                r.fetched_at,
            )
            found[(r.destination, r.event_name)].append(view)
    return dict(found)


RESULT_COLUMNS: tuple[str, ...] = tuple(r.value for r in Result)


def _ms(value: float | None) -> str | int:
    return "" if value is None else round(value)


def health_table(rows: list[HealthRow]) -> export.Table:
    """The delivery health report as one CSV line per (destination, event, outcome, code)."""
    header = ("destination", "event", "sent", "p50_ms", "p95_ms", "outcome", "code", "count")
    lines: list[list[export.Cell]] = []
    for row in rows:
        head: list[export.Cell] = [row.destination, row.event_name, row.sent]
        head += [_ms(row.p50), _ms(row.p95)]
        for result in RESULT_COLUMNS:
            for code, n in sorted(row.codes.get(result, {}).items()):
                lines.append([*head, result, code, n])
    return export.Table(header, lines)


def match_table(rows: list[MatchRow]) -> export.Table:
    """The match quality report: accepted events and the share carrying each key."""
    header = ("destination", "event", "accepted_events", *match_keys.KEYS)
    lines: list[list[export.Cell]] = []
    for row in rows:
        shares = [row.share(key) for key in match_keys.KEYS]
        cells = ["" if s is None else round(s, 4) for s in shares]
        lines.append([row.destination, row.event_name, row.events, *cells])
    return export.Table(header, lines)
