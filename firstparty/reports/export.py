"""The reports' numbers as tables: the rows a page shows under a chart and its CSV download.

Cells that a spreadsheet would run as a formula (text starting with = + - @, a tab or a
carriage return: an event name, a utm_source or a destination name comes from outside) get a
leading apostrophe, as OWASP's CSV injection advice says; numbers are written as numbers.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from firstparty.reports import summary

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
Cell = str | int | float


@dataclass(frozen=True)
class Table:
    """A header and rows: one report's numbers."""

    header: Sequence[str]
    rows: Sequence[Sequence[Cell]]


def safe(cell: Cell) -> Cell:
    """A cell no spreadsheet runs as a formula."""
    if isinstance(cell, str) and cell.startswith(FORMULA_STARTS):
        return "'" + cell
    return cell


def csv_text(table: Table) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([safe(c) for c in table.header])
    writer.writerows([safe(c) for c in row] for row in table.rows)
    return out.getvalue()


def daily(totals: Iterable[summary.DayTotals]) -> Table:
    rows = [(t.day.isoformat(), t.events, t.conversions) for t in totals]
    return Table(("day", "events", "conversions"), rows)


def outcomes(destinations: Iterable[summary.DestinationDays]) -> Table:
    rows: list[list[Cell]] = [
        [one.destination, day.isoformat(), *(counts[o] for o in summary.OUTCOMES)]
        for one in destinations
        for day, counts in one.days
    ]
    return Table(("destination", "day", *summary.OUTCOMES), rows)


def names(per_day: summary.EventsPerDay) -> Table:
    rows = [
        (day.isoformat(), name, n)
        for day, counts in per_day.days
        for name, n in zip(per_day.names, counts, strict=True)
        if n
    ]
    return Table(("day", "event", "events"), rows)


def buckets(label: str, found: Iterable[summary.Bucket]) -> Table:
    return Table((label, "conversions"), [(b.label, b.count) for b in found])


def rates(found: Iterable[summary.DeliveryRate]) -> Table:
    rows = [
        (
            r.destination,
            r.statuses.get("delivered", 0),
            r.statuses.get("failed", 0),
            r.waiting,
            r.statuses.get("skipped", 0),
            r.statuses.get("test", 0),
            "" if r.success_rate is None else round(r.success_rate * 100, 1),
        )
        for r in found
    ]
    header = ("destination", "delivered", "failed", "waiting", "skipped", "test", "success_pct")
    return Table(header, rows)
