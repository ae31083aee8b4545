"""An audience's size over time as the geometry of an inline SVG line chart (no script): the
template draws the two polylines, the axis labels and a dot per point. The x axis is time: the
first recorded size at the left edge, the last at the right."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from firstparty.audiences.history import SizePoint

WIDTH, HEIGHT = 560, 160
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 8, 22  # margins for the labels


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    size_line: str  # "x,y x,y ..." for <polyline points>
    consented_line: str
    dots: list[tuple[float, float, str]]  # x, y, title (when and how many)
    top_label: str  # the y axis' largest value
    first_label: str  # the x axis' ends
    last_label: str
    baseline: float  # y of the zero line


def chart(points: Sequence[SizePoint]) -> Chart | None:
    """The chart of these sizes (oldest first), or None when there is nothing to draw."""
    if not points:
        return None
    top = max(max(p.size for p in points), 1)
    inner_w, inner_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    start = points[0].at
    span = (points[-1].at - start).total_seconds()

    def x(i: int) -> float:
        share = (points[i].at - start).total_seconds() / span if span > 0 else 0.5
        return round(LEFT + inner_w * share, 1)

    def y(value: int) -> float:
        return round(TOP + inner_h - inner_h * value / top, 1)

    size_line = " ".join(f"{x(i)},{y(p.size)}" for i, p in enumerate(points))
    consented_line = " ".join(f"{x(i)},{y(p.consented)}" for i, p in enumerate(points))
    dots = [
        (x(i), y(p.size), f"{p.at:%Y-%m-%d %H:%M} UTC: {p.size} people, {p.consented} consented")
        for i, p in enumerate(points)
    ]
    return Chart(
        WIDTH,
        HEIGHT,
        size_line,
        consented_line,
        dots,
        f"{top:,}",
        f"{points[0].at:%b %d %H:%M}",
        f"{points[-1].at:%b %d %H:%M}",
        y(0),
    )
