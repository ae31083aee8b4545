"""The delivery health and match quality report pages (`/admin/reports/delivery-health`,
`/admin/reports/match-quality`), each with its CSV download and the shared period filter."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from firstparty.delivery import health as rollup
from firstparty.destinations.base import Adapter
from firstparty.identity import match_keys
from firstparty.reports import export, health
from firstparty.runtime import Runtime
from firstparty.web import admin, reports


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _csv(name: str, table: export.Table, request: Request) -> Response:
    chosen = reports.period_of(request)
    filename = f"firstparty-{name}-{chosen.first.isoformat()}-{chosen.last.isoformat()}.csv"
    headers = {**admin.HEADERS, "Content-Disposition": f'attachment; filename="{filename}"'}
    return Response(export.csv_text(table), media_type="text/csv; charset=utf-8", headers=headers)


async def delivery_page(request: Request) -> Response:
    chosen = reports.period_of(request)
    engine = _runtime(request).engine

    def build() -> dict[str, Any]:
        return {
            **reports.filter_context(request, chosen),
            "rows": health.delivery_health(engine, period=chosen),
            "results": health.RESULT_COLUMNS,
            "explained": ("failed", "retried", "skipped"),
            "buckets": rollup.BUCKETS_MS,
            "query": urlencode(chosen.query()),
        }

    return admin._render(request, "admin_delivery_health.html", await asyncio.to_thread(build))


async def delivery_csv(request: Request) -> Response:
    chosen = reports.period_of(request)
    rows = await asyncio.to_thread(health.delivery_health, _runtime(request).engine, period=chosen)
    return _csv("delivery-health", health.health_table(rows), request)


async def match_page(request: Request) -> Response:
    chosen = reports.period_of(request)
    runtime = _runtime(request)
    adapters = runtime.adapters

    def build() -> dict[str, Any]:
        rows = health.match_quality(runtime.engine, period=chosen)
        verdicts = health.latest_verdicts(runtime.engine)
        groups: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            adapter = adapters.get(row.destination)
            mapped = adapter.settings.mapped_name(row.event_name) if adapter else None
            groups.setdefault(row.destination, []).append(
                {"row": row, "verdicts": verdicts.get((row.destination, mapped or ""), [])}
            )
        return {
            **reports.filter_context(request, chosen),
            "groups": groups,
            "keys": {name: _keys(adapters.get(name)) for name in groups},
            "overall": {name: verdicts.get((name, ""), []) for name in groups},
            "query": urlencode(chosen.query()),
        }

    return admin._render(request, "admin_match_quality.html", await asyncio.to_thread(build))


def _keys(adapter: Adapter | None) -> tuple[str, ...]:
    """The columns of a destination: what its platform matches on (every key if unknown)."""
    if adapter is None or not adapter.match_keys:
        return match_keys.KEYS
    return adapter.match_keys


async def match_csv(request: Request) -> Response:
    chosen = reports.period_of(request)
    rows = await asyncio.to_thread(health.match_quality, _runtime(request).engine, period=chosen)
    return _csv("match-quality", health.match_table(rows), request)


routes = [
    Route("/admin/reports/delivery-health", admin._signed_in(delivery_page), methods=["GET"]),
    Route("/admin/reports/delivery-health.csv", admin._signed_in(delivery_csv), methods=["GET"]),
    Route("/admin/reports/match-quality", admin._signed_in(match_page), methods=["GET"]),
    Route("/admin/reports/match-quality.csv", admin._signed_in(match_csv), methods=["GET"]),
]
