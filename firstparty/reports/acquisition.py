"""Acquisition and attribution: conversions and their value by channel and by source / medium /
campaign, first touch beside last touch, the cross-device share, and what first-party
collection recovered per ad platform. Reads `conversion_rollups` only (one grouped query per
report over the period's hours), never the events.

Values are summed per currency, never across currencies; a conversion without a value counts
in the conversions and in no value.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from firstparty.reports import conversion_rollups, credit
from firstparty.reports.channels import RULES, Channel
from firstparty.reports.period import Period
from firstparty.store.models import conversion_rollups as table

NO_CURRENCY = ""
Money = dict[str, int]  # currency -> value in millionths


@dataclass
class Tally:
    count: int = 0
    values: Money = field(default_factory=dict)

    def add(self, count: int, currency: str, micros: int) -> None:
        self.count += count
        if currency or micros:
            self.values[currency] = self.values.get(currency, 0) + micros


@dataclass(frozen=True)
class Line:
    """One row of a first-vs-last table: a label (a channel, or source / medium / campaign)."""

    label: tuple[str, ...]
    first: Tally
    last: Tally


@dataclass(frozen=True)
class Acquisition:
    total: Tally
    cross_device: int
    by_channel: list[Line]
    by_campaign: list[Line]

    @property
    def cross_device_share(self) -> float | None:
        return self.cross_device / self.total.count if self.total.count else None


@dataclass(frozen=True)
class Recovered:
    """One ad platform: conversions with its click id in window, and those browser-only
    tracking would likely have missed, in all and by reason (a conversion may have several)."""

    platform: str
    clicked: int
    recovered: int
    reasons: dict[str, int]

    @property
    def share(self) -> float | None:
        return self.recovered / self.clicked if self.clicked else None


CHANNEL_ORDER = [rule.channel for rule in RULES] + [Channel.UNKNOWN]


def acquisition(engine: Engine, *, period: Period) -> Acquisition:
    """Conversions in the period by first and by last touch, channel and source/medium/campaign."""
    r = table.c
    dims = [r.ft_channel, r.ft_source, r.ft_medium, r.ft_campaign]
    dims += [r.lt_channel, r.lt_source, r.lt_medium, r.lt_campaign, r.cross_device, r.currency]
    total, cross = Tally(), 0
    channels: dict[str, Line] = {}
    campaigns: dict[tuple[str, ...], Line] = {}
    for row in _grouped(engine, period, dims):
        n, micros = int(row.n), int(row.v or 0)
        total.add(n, row.currency, micros)
        cross += n if row.cross_device else 0
        _line(channels, row.ft_channel).first.add(n, row.currency, micros)
        _line(channels, row.lt_channel).last.add(n, row.currency, micros)
        first = (row.ft_channel, row.ft_source, row.ft_medium, row.ft_campaign)
        last = (row.lt_channel, row.lt_source, row.lt_medium, row.lt_campaign)
        _line(campaigns, first).first.add(n, row.currency, micros)
        _line(campaigns, last).last.add(n, row.currency, micros)
    order = {c.value: i for i, c in enumerate(CHANNEL_ORDER)}
    by_channel = sorted(channels.values(), key=lambda line: order.get(line.label[0], 99))
    by_campaign = sorted(
        campaigns.values(), key=lambda line: (-max(line.first.count, line.last.count), line.label)
    )
    return Acquisition(total, cross, by_channel, by_campaign)


def recovered(engine: Engine, *, period: Period) -> list[Recovered]:
    """Per ad platform (Meta, TikTok, Google Ads) the conversions first-party collection kept."""
    r = table.c
    clicked: dict[str, int] = defaultdict(int)
    saved: dict[str, int] = defaultdict(int)
    reasons: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(credit.REASONS, 0))
    for row in _grouped(engine, period, [r.clicked, r.recovered]):
        n = int(row.n)
        for platform in filter(None, row.clicked.split(",")):
            clicked[platform] += n
        for part in filter(None, row.recovered.split(",")):
            platform, _, why = part.partition(":")
            saved[platform] += n
            for reason in why.split("+"):
                if reason in reasons[platform]:
                    reasons[platform][reason] += n
    return [
        Recovered(p.value, clicked[p.value], saved[p.value], dict(reasons[p.value]))
        for p in credit.RECOVERABLE
    ]


def money(values: Mapping[str, int]) -> list[tuple[str, Decimal]]:
    """(currency, amount) pairs, currencies in order, "" (no currency given) last."""
    ordered = sorted(values.items(), key=lambda item: (item[0] == NO_CURRENCY, item[0]))
    return [(code, Decimal(micros) / conversion_rollups.MICROS) for code, micros in ordered]


def _grouped(engine: Engine, period: Period, dims: list[Any]) -> Iterable[Any]:
    r = table.c
    query = (
        sa.select(*dims, sa.func.sum(r.count).label("n"), sa.func.sum(r.value_micros).label("v"))
        .where(r.hour >= period.start, r.hour < period.end)
        .group_by(*dims)
    )
    if period.source:
        query = query.where(r.source == period.source)
    with engine.connect() as conn:
        return [row for row in conn.execute(query) if row.n]


def _line(lines: dict[Any, Line], label: Any) -> Line:
    key = label if isinstance(label, tuple) else (label,)
    if key not in lines:
        lines[key] = Line(key, Tally(), Tally())
    return lines[key]
