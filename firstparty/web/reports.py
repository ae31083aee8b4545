"""The reports pages at `/admin/reports`: the period filter every report shares, the page.

`period_of(request)` reads the shared query string (`reports.period`) and `filter_context`
gives the `_report_filters.html` partial what it shows; other report pages use both.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from firstparty.collect import sources
from firstparty.reports import period, summary
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


async def reports_page(request: Request) -> Response:
    runtime = _runtime(request)
    engine = runtime.engine
    chosen = period_of(request)
    bots = request.query_params.get("bots") == "include"  # robots' events: left out by default

    def gather() -> dict[str, Any]:
        return {
            **filter_context(request, chosen),
            "bots": bots,
            "per_day": summary.events_per_day(engine, period=chosen, include_bots=bots),
            "by_source": summary.conversions_by_utm_source(
                engine, period=chosen, include_bots=bots
            ),
            "by_click": summary.conversions_by_click_kind(engine, period=chosen, include_bots=bots),
            "rates": summary.delivery_rates(engine, period=chosen),
        }

    return admin._render(request, "admin_reports.html", await asyncio.to_thread(gather))


routes = [
    Route("/admin/reports", admin._signed_in(reports_page), methods=["GET"]),
]
