"""The SVG charts: well-formed, labelled for screen readers, bars in proportion, text escaped."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from firstparty.reports import charts

NS = {"s": "http://www.w3.org/2000/svg"}


def chart(**overrides: object) -> ET.Element:
    fields: dict[str, object] = {
        "title": "Events <per> day",
        "description": "Two days & a count",
        "x_label": "day (UTC)",
        "y_label": "events",
        "labels": ["Nov 1", "Nov 2"],
        "series": [
            charts.Series("events", [10, 30], "#999"),
            charts.Series("conversions", [5, 0], "#00f"),
        ],
    }
    return ET.fromstring(str(charts.svg(charts.Chart(**fields | overrides), uid="t")))  # type: ignore[arg-type]


def heights(svg: ET.Element, color: str) -> list[float]:
    return [
        float(r.get("height", 0))
        for r in svg.iterfind("s:rect", NS)
        if r.get("fill") == color and r.find("s:title", NS) is not None
    ]


def test_labelled_for_screen_readers() -> None:
    svg = chart()
    assert svg.get("role") == "img" and svg.get("aria-labelledby") == "t-title t-desc"
    assert svg.findtext("s:title", namespaces=NS) == "Events <per> day"
    assert svg.findtext("s:desc", namespaces=NS) == "Two days & a count"
    texts = [t.text for t in svg.iterfind("s:text", NS)]
    assert {"day (UTC)", "events", "Nov 1", "Nov 2", "conversions"} <= set(texts)
    tips = [r.findtext("s:title", namespaces=NS) for r in svg.iterfind("s:rect", NS)]
    assert "Nov 2: 30 events" in tips and "Nov 1: 5 conversions" in tips


def test_bars_in_proportion_overlaid_and_stacked() -> None:
    events = heights(chart(), "#999")
    assert events[1] == 3 * events[0] > 0
    assert heights(chart(), "#00f")[0] == events[0] / 2
    stacked = chart(stacked=True)
    rects = [r for r in stacked.iterfind("s:rect", NS) if r.find("s:title", NS) is not None]
    first_events, first_conversions = rects[0], rects[1]
    top_of_events = float(first_events.get("y", 0))
    bottom_of_conversions = float(first_conversions.get("y", 0)) + float(
        first_conversions.get("height", 0)
    )
    assert abs(top_of_events - bottom_of_conversions) < 0.11  # conversions sit on the events


def test_axis_top_is_round_and_empty_charts_draw() -> None:
    assert [charts._nice_top(n) for n in (0, 3, 5, 13, 99, 150, 2600)] == [
        4,
        4,
        8,
        20,
        100,
        200,
        4000,
    ]
    svg = chart(labels=[], series=[])
    assert svg.get("role") == "img"
