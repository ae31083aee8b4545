"""The acquisition report at `/admin/reports/acquisition`: first and last touch by channel and
campaign, the cross-device share, recovered conversions per platform; `?format=csv` downloads
the tables as one CSV (a `table` column says which)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from firstparty.errors import FieldError, InputError
from firstparty.reports import acquisition as service
from firstparty.reports import channels, credit, export
from firstparty.web import admin, reports

MAX_ROWS = 200  # source/medium/campaign rows on the page (all of them in the CSV)


async def acquisition_page(request: Request) -> Response:
    engine = request.app.state.runtime.engine
    chosen = reports.period_of(request)
    wanted = request.query_params.get("format", "html")
    if wanted not in ("html", "csv"):
        raise InputError(400, "bad report query", [FieldError("format", "must be html or csv")])

    def gather() -> tuple[service.Acquisition, list[service.Recovered]]:
        return service.acquisition(engine, period=chosen), service.recovered(engine, period=chosen)

    found, saved = await asyncio.to_thread(gather)
    if wanted == "csv":
        name = f"acquisition-{chosen.first.isoformat()}-{chosen.last.isoformat()}.csv"
        return csv_response(name, _csv_rows(found, saved))
    context = {
        **reports.filter_context(request, chosen),
        "report": found,
        "recovered": saved,
        "money": service.money,
        "rules": channels.RULES,
        "reasons": credit.REASONS,
        "max_rows": MAX_ROWS,
        "csv_query": {**chosen.query(), "format": "csv"},
    }
    return admin._render(request, "admin_acquisition.html", context)


def csv_response(filename: str, rows: Iterator[list[Any]]) -> Response:
    """Rows (the header first) as a CSV download, formula-safe as every report's
    (`reports.export`)."""
    header, *body = [[_cell(c) for c in row] for row in rows]
    text = export.csv_text(export.Table([str(c) for c in header], body))
    headers = {**admin.HEADERS, "Content-Disposition": f'attachment; filename="{filename}"'}
    return Response(text, media_type="text/csv; charset=utf-8", headers=headers)


def _cell(value: Any) -> export.Cell:
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value).lower()
    if isinstance(value, int | float | str):
        return value
    return float(value)  # a Decimal amount


def _csv_rows(found: service.Acquisition, saved: list[service.Recovered]) -> Iterator[list[Any]]:
    yield [
        "table",
        "channel",
        "source",
        "medium",
        "campaign",
        "touch",
        "conversions",
        "currency",
        "value",
    ]
    for table, lines in (("by_channel", found.by_channel), ("by_campaign", found.by_campaign)):
        for line in lines:
            label = list(line.label) + [""] * (4 - len(line.label))
            for touch, tally in (("first", line.first), ("last", line.last)):
                if not tally.count:
                    continue
                amounts: list[tuple[str, Any]] = list(service.money(tally.values))
                for currency, value in amounts or [("", "")]:
                    yield [table, *label, touch, tally.count, currency, value]
    yield ["cross_device", "", "", "", "", "", found.cross_device, "", ""]
    yield ["total", "", "", "", "", "", found.total.count, "", ""]
    for p in saved:
        yield ["recovered", p.platform, "", "", "", "clicked", p.clicked, "", ""]
        yield ["recovered", p.platform, "", "", "", "recovered", p.recovered, "", ""]
        for reason, n in p.reasons.items():
            yield ["recovered", p.platform, "", "", "", reason, n, "", ""]


routes = [
    Route("/admin/reports/acquisition", admin._signed_in(acquisition_page), methods=["GET"]),
]
