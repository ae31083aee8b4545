"""The reports pages at `/admin/reports`: the period filter every report shares, the page.

`period_of(request)` reads the shared query string (`reports.period`) and `filter_context`
gives the `_report_filters.html` partial what it shows; other report pages use both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from sqlalchemy.engine import Engine
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from firstparty.collect import sources
from firstparty.reports import charts, export, period, summary
from firstparty.runtime import Runtime
from firstparty.web import admin


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def period_of(request: Request) -> period.Period:
    """The report period the query string asks for (InputError 400 when malformed)."""
    settings = _runtime(request).settings
    params = {
        key: request.query_params.get(key, "") for key in ("range", "from", "to", "source", "tz")
    }
    return period.parse(params, default_zone=settings.reports.time_zone, now=datetime.now(UTC))


def filter_context(request: Request, chosen: period.Period) -> dict[str, Any]:
    """What `_report_filters.html` needs: the period, the presets and the known sources."""
    runtime = _runtime(request)
    names = sorted({s["name"] for s in sources.listing(runtime.settings, runtime.engine)})
    if chosen.source and chosen.source not in names:
        names.append(chosen.source)
    return {
        "period": chosen,
        "presets": list(period.LABELS.items()),
        "source_names": names,
        "filter_action": request.url.path,
    }


@dataclass(frozen=True)
class Numbers:
    """Everything /admin/reports shows, for one period."""

    totals: list[summary.DayTotals]
    per_day: summary.EventsPerDay
    by_source: list[summary.Bucket]
    by_click: list[summary.Bucket]
    rates: list[summary.DeliveryRate]
    outcomes: list[summary.DestinationDays]

    @classmethod
    def of(cls, events: summary.EventReports, outbox: summary.DeliveryReports) -> Numbers:
        return cls(
            totals=events.totals,
            per_day=events.per_day,
            by_source=events.by_source,
            by_click=events.by_click,
            rates=outbox.rates,
            outcomes=outbox.outcomes,
        )


def gather(engine: Engine, chosen: period.Period, bots: bool) -> Numbers:
    """Every report of the page: one read of each rollup for the period (`summary`)."""
    events = summary.event_reports(engine, period=chosen, include_bots=bots)
    return Numbers.of(events, summary.delivery_reports(engine, period=chosen))


async def gather_at_once(engine: Engine, chosen: period.Period, bots: bool) -> Numbers:
    """`gather`, its two reads on two connections at the same time (what the page waits for)."""
    events, outbox = await asyncio.gather(
        asyncio.to_thread(summary.event_reports, engine, period=chosen, include_bots=bots),
        asyncio.to_thread(summary.delivery_reports, engine, period=chosen),
    )
    return Numbers.of(events, outbox)


# The CSV downloads: /admin/reports/NAME.csv with the page's query string; each reads only the
# rollup its report needs.
EVENT_DOWNLOADS: dict[str, Callable[[summary.EventReports], export.Table]] = {
    "daily": lambda n: export.daily(n.totals),
    "events": lambda n: export.names(n.per_day),
    "utm-source": lambda n: export.buckets("utm_source", n.by_source),
    "click-id": lambda n: export.buckets("click_id", n.by_click),
}
OUTBOX_DOWNLOADS: dict[str, Callable[[summary.DeliveryReports], export.Table]] = {
    "delivery": lambda n: export.rates(n.rates),
    "outcomes": lambda n: export.outcomes(n.outcomes),
}


def download(engine: Engine, name: str, chosen: period.Period, bots: bool) -> export.Table:
    """The numbers of one CSV download (`name` in EVENT_DOWNLOADS or OUTBOX_DOWNLOADS)."""
    if name in EVENT_DOWNLOADS:
        events = summary.event_reports(engine, period=chosen, include_bots=bots)
        return EVENT_DOWNLOADS[name](events)
    return OUTBOX_DOWNLOADS[name](summary.delivery_reports(engine, period=chosen))


def _bots(request: Request) -> bool:
    """Robots' events are left out unless `bots=include`."""
    return request.query_params.get("bots") == "include"


def _query(chosen: period.Period, bots: bool) -> str:
    return urlencode(chosen.query() | ({"bots": "include"} if bots else {}))


async def reports_page(request: Request) -> Response:
    chosen, bots = period_of(request), _bots(request)
    engine = _runtime(request).engine

    numbers = await gather_at_once(engine, chosen, bots)

    def build() -> dict[str, Any]:
        return {
            **filter_context(request, chosen),
            "bots": bots,
            "numbers": numbers,
            "per_day": numbers.per_day,
            "by_source": numbers.by_source,
            "by_click": numbers.by_click,
            "rates": numbers.rates,
            "daily_chart": charts.daily(numbers.totals, chosen),
            "outcome_charts": [
                (one, charts.outcomes(one, chosen, i)) for i, one in enumerate(numbers.outcomes)
            ],
            "query": _query(chosen, bots),
        }

    return admin._render(request, "admin_reports.html", await asyncio.to_thread(build))


async def report_csv(request: Request) -> Response:
    """One report's numbers as CSV, for the same period as the page."""
    name = request.path_params["name"]
    if name not in EVENT_DOWNLOADS and name not in OUTBOX_DOWNLOADS:
        return admin._error(request, 404, "No such report.")
    chosen, bots = period_of(request), _bots(request)
    engine = _runtime(request).engine
    table = await asyncio.to_thread(download, engine, name, chosen, bots)
    filename = f"firstparty-{name}-{chosen.first.isoformat()}-{chosen.last.isoformat()}.csv"
    headers = {**admin.HEADERS, "Content-Disposition": f'attachment; filename="{filename}"'}
    body = export.csv_text(table)
    return Response(body, media_type="text/csv; charset=utf-8", headers=headers)


routes = [
    Route("/admin/reports", admin._signed_in(reports_page), methods=["GET"]),
    Route("/admin/reports/{name}.csv", admin._signed_in(report_csv), methods=["GET"]),
]
