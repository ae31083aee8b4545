"""Bar charts as inline SVG: server-rendered, no script, readable by screen readers.

A chart is a `role="img"` SVG labelled by its own `<title>` and `<desc>` (the desc says in
words what the bars show), with axis labels, a legend, and a `<title>` on every bar (the
browser shows it on hover). Colours are presentation attributes, so the admin CSP (no script,
inline style only) lets it through. Every chart sits beside a table of the same numbers and a
CSV download (the pages), the accessible way to read them exactly.

Hand-written rather than pygal or leather: pygal's SVG carries script tags (its tooltips) and
random ids, and neither library writes `role="img"` or a `<desc>`; what these pages need (bars,
stacked or overlaid, one axis) is a hundred lines.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

from firstparty.reports import period as period_mod
from firstparty.reports import summary

WIDTH, HEIGHT = 720, 240
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 14, 58  # room for the y ticks, the x labels and axis titles


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[int]
    color: str


@dataclass(frozen=True)
class Chart:
    """Bars per label; `stacked`: the series pile up, else each is drawn over the one before,
    narrower (for a part of a whole: conversions among events)."""

    title: str
    description: str
    x_label: str
    y_label: str
    labels: Sequence[str]
    series: Sequence[Series]
    stacked: bool = False


def svg(chart: Chart, *, uid: str) -> Markup:
    """The chart as an SVG element, ready to put in a page; `uid` prefixes its element ids."""
    top = _nice_top(_highest(chart))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="100%" preserveAspectRatio="xMidYMid meet" class="chart" '
        f'aria-labelledby="{uid}-title {uid}-desc">',
        f'<title id="{uid}-title">{escape(chart.title)}</title>',
        f'<desc id="{uid}-desc">{escape(chart.description)}</desc>',
        *_grid(top),
        *_bars(chart, top),
        *_x_labels(chart.labels),
        *_axis_titles(chart),
        *_legend(chart.series),
        "</svg>",
    ]
    return Markup("\n".join(parts))


def _highest(chart: Chart) -> int:
    if not chart.labels or not chart.series:
        return 0
    if chart.stacked:
        return max(sum(s.values[i] for s in chart.series) for i in range(len(chart.labels)))
    return max(max(s.values, default=0) for s in chart.series)


def _nice_top(highest: int) -> int:
    """The axis maximum: four whole ticks of 1, 2 or 5 times a power of ten (or 25 times)."""
    need = max(highest, 1) / 4
    power = 1
    while True:
        for step in (1, 2, 5) if power == 1 else (1, 2, 2.5, 5):
            if step * power >= need:
                return int(4 * step * power)
        power *= 10


def _plot() -> tuple[float, float]:
    return WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM


def _y(value: float, top: int) -> float:
    _, height = _plot()
    return TOP + height - (value / top) * height


def _grid(top: int) -> list[str]:
    width, _ = _plot()
    lines = []
    for i in range(5):
        value = top * i / 4
        y = _y(value, top)
        label = f"{value:,.0f}"
        lines.append(
            f'<line x1="{LEFT}" x2="{LEFT + width}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="{"#5f6b7a" if i == 0 else "#dde2e8"}" stroke-width="1"/>'
        )
        lines.append(
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" '
            f'fill="#5f6b7a">{label}</text>'
        )
    return lines


def _bars(chart: Chart, top: int) -> list[str]:
    width, _ = _plot()
    count = max(len(chart.labels), 1)
    slot = width / count
    bar = max(slot * 0.7, 1.0)
    out = []
    for i, label in enumerate(chart.labels):
        x = LEFT + i * slot + (slot - bar) / 2
        base = 0
        for depth, series in enumerate(chart.series):
            value = series.values[i]
            start = base if chart.stacked else 0
            inset = 0.0 if chart.stacked else bar * 0.2 * depth
            y0, y1 = _y(start, top), _y(start + value, top)
            tip = f"{label}: {value:,} {series.name}"
            out.append(
                f'<rect x="{x + inset:.1f}" y="{y1:.1f}" width="{bar - 2 * inset:.1f}" '
                f'height="{max(y0 - y1, 0):.1f}" fill="{series.color}">'
                f"<title>{escape(tip)}</title></rect>"
            )
            base += value
    return out


def _x_labels(labels: Sequence[str]) -> list[str]:
    width, height = _plot()
    if not labels:
        return []
    slot = width / len(labels)
    every = max(1, math.ceil(len(labels) / 12))  # at most a dozen labels fit
    y = TOP + height + 16
    return [
        f'<text x="{LEFT + i * slot + slot / 2:.1f}" y="{y}" text-anchor="middle" '
        f'font-size="11" fill="#1d232b">{escape(label)}</text>'
        for i, label in enumerate(labels)
        if i % every == 0
    ]


def _axis_titles(chart: Chart) -> list[str]:
    width, height = _plot()
    middle = TOP + height / 2
    return [
        f'<text x="{LEFT + width / 2:.1f}" y="{HEIGHT - 22}" text-anchor="middle" '
        f'font-size="12" fill="#5f6b7a">{escape(chart.x_label)}</text>',
        f'<text x="14" y="{middle:.1f}" text-anchor="middle" font-size="12" fill="#5f6b7a" '
        f'transform="rotate(-90 14 {middle:.1f})">{escape(chart.y_label)}</text>',
    ]


def _legend(series: Sequence[Series]) -> list[str]:
    out, x = [], float(LEFT)
    y = HEIGHT - 8
    for one in series:
        out.append(f'<rect x="{x:.1f}" y="{y - 9}" width="10" height="10" fill="{one.color}"/>')
        out.append(
            f'<text x="{x + 14:.1f}" y="{y}" font-size="11" fill="#1d232b">'
            f"{escape(one.name)}</text>"
        )
        x += 24 + 7 * len(one.name)
    return out


# ---------------------------------------------------------------- the reports' charts

EVENTS_COLOR, CONVERSIONS_COLOR = "#9db6e8", "#2456c9"
OUTCOME_COLORS = {
    "delivered": "#1c7c3a",
    "test": "#7b5ea7",
    "skipped": "#9aa5b1",
    "failed": "#b3261e",
    "waiting": "#d49a00",
}


def _day_labels(period: period_mod.Period) -> list[str]:
    return [f"{day:%b} {day.day}" for day in period.days]


def _span(period: period_mod.Period) -> str:
    return f"{period.first.isoformat()} to {period.last.isoformat()}, {period.zone_name}"


def daily(totals: Sequence[summary.DayTotals], period: period_mod.Period) -> Markup:
    """Events and, over them, conversions per local day."""
    events = [t.events for t in totals]
    conversions = [t.conversions for t in totals]
    busiest = max(totals, key=lambda t: t.events, default=None)
    words = f"{sum(events):,} events and {sum(conversions):,} conversions in all"
    if busiest is not None and busiest.events:
        words += f"; the most events on {busiest.day.isoformat()} ({busiest.events:,})"
    chart = Chart(
        title="Events and conversions per day",
        description=f"Bars per day, {_span(period)}: {words}. The table below has every number.",
        x_label=f"day ({period.zone_name})",
        y_label="events",
        labels=_day_labels(period),
        series=[
            Series("events", events, EVENTS_COLOR),
            Series("conversions", conversions, CONVERSIONS_COLOR),
        ],
    )
    return svg(chart, uid="daily")


def outcomes(one: summary.DestinationDays, period: period_mod.Period, index: int) -> Markup:
    """One destination's outbox rows per local day, stacked by outcome."""
    totals = {o: sum(counts[o] for _, counts in one.days) for o in summary.OUTCOMES}
    words = ", ".join(f"{n:,} {o}" for o, n in totals.items() if n) or "nothing"
    chart = Chart(
        title=f"Delivery outcomes per day: {one.destination}",
        description=(
            f"Stacked bars per day, {_span(period)}, of the events sent to {one.destination} "
            f"by outcome: {words}. The table below has every number."
        ),
        x_label=f"day the event was queued ({period.zone_name})",
        y_label="events",
        labels=_day_labels(period),
        series=[
            Series(o, [counts[o] for _, counts in one.days], OUTCOME_COLORS[o])
            for o in summary.OUTCOMES
        ],
        stacked=True,
    )
    return svg(chart, uid=f"outcomes{index}")
