"""The Audiences page at `/admin/audiences`: each audience's rules, its size over time, who
each platform can match, the last sync per destination, the platform minimum, a Sync button.

Thin handlers over the services the CLI uses (`audiences.preview`, `audiences.service`): the
page computes each audience's members as a sync would (nothing is sent) and the button runs
`service.sync_now` as `firstparty audiences sync NAME` does: a POST with the session's CSRF
token, by the operator role (`admin._operator_only`), written to the audit log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from firstparty.audiences import history, preview, registry, service
from firstparty.audiences.definition import AudienceSettings
from firstparty.audiences.sync import RunResult
from firstparty.errors import ConfigError
from firstparty.operators import audit
from firstparty.reports import charts, period
from firstparty.runtime import Runtime
from firstparty.web import admin


@dataclass(frozen=True)
class DestinationView:
    name: str
    type: str
    coverage: preview.Coverage | None  # None: cannot send (unknown, or its secret unset)
    problem: str
    last: history.LastRun | None
    minimum: int  # matched people the platform needs before it targets the audience


@dataclass(frozen=True)
class AudienceView:
    audience: AudienceSettings
    size: int
    consented: int
    chart: Markup | None  # the size over time (reports.charts), None before any run
    sizes: list[history.SizePoint]  # the chart's numbers, for the table beside it
    destinations: list[DestinationView]


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def audiences_page(request: Request) -> Response:
    return await _page(request, {})


async def sync_audience(request: Request) -> Response:
    """Sync one audience now (the button), then the page with what the run did."""
    runtime = _runtime(request)
    name = (await admin._form(request)).get("name", "")
    try:
        results = await service.sync_now(
            settings=runtime.settings, engine=runtime.engine, name=name, trigger="button"
        )
    except ConfigError as exc:
        return admin._error(request, 404, str(exc))
    except service.Busy as exc:
        return await _page(request, {"error": str(exc)}, 409)
    detail = {
        r.destination: {"adds": r.adds, "removes": r.removes, "errors": r.errors} for r in results
    }
    await asyncio.to_thread(
        audit.write,
        runtime.engine,
        actor=admin.principal(request).actor,
        action=audit.Action.AUDIENCE_SYNC,
        subject=name,
        detail=detail,
    )
    return await _page(request, {"done": name, "results": [_said(r) for r in results]})


def _said(result: RunResult) -> str:
    words = (
        f"{result.destination}: {result.adds} added, {result.removes} removed, "
        f"{result.errors} not acknowledged (retried next run)"
    )
    return words + (f" — {result.detail}" if result.detail else "")


async def _page(request: Request, outcome: dict[str, Any], status: int = 200) -> Response:
    runtime = _runtime(request)
    views = await asyncio.to_thread(_views, runtime)
    return admin._render(request, "admin_audiences.html", {"views": views, **outcome}, status)


def _views(runtime: Runtime) -> list[AudienceView]:
    settings, engine = runtime.settings, runtime.engine
    now = datetime.now(UTC)
    runs = history.last_runs(engine)
    types = {d.name: d.type for d in settings.destinations}
    zone = period.zone(settings.reports.time_zone)
    views = []
    for index, audience in enumerate(settings.audiences):
        seen = preview.preview(settings, engine, name=audience.name, now=now)
        covered = {c.destination: c for c in seen.coverage}
        destinations = [
            DestinationView(
                name,
                types.get(name, "?"),
                covered.get(name),
                _problem(runtime, name, types),
                runs.get((audience.name, name)),
                _minimum(types.get(name, "")),
            )
            for name in audience.destinations
        ]
        sizes = history.sizes(engine, audience.name)
        chart = size_chart(audience.name, sizes, zone, index)
        view = AudienceView(audience, seen.size, seen.consented, chart, sizes, destinations)
        views.append(view)
    return views


def size_chart(
    name: str, points: Sequence[history.SizePoint], zone: ZoneInfo, index: int
) -> Markup | None:
    """The audience's recorded sizes as bars, oldest first, consented drawn over matching."""
    if not points:
        return None
    last = points[-1]
    chart = charts.Chart(
        title=f"Size of {name} over time",
        description=(
            f"Bars per recorded size ({len(points)}, one per run), the people matching the rules "
            f"with, over them, those who may be sent to ad platforms; the latest, "
            f"{last.at.astimezone(zone):%Y-%m-%d %H:%M}: {last.size:,} matching, "
            f"{last.consented:,} consented."
        ),
        x_label=f"run ({zone.key})",
        y_label="people",
        labels=[f"{p.at.astimezone(zone):%b %d %H:%M}" for p in points],
        series=[
            charts.Series("matching", [p.size for p in points], charts.EVENTS_COLOR),
            charts.Series("consented", [p.consented for p in points], charts.CONVERSIONS_COLOR),
        ],
    )
    return charts.svg(chart, uid=f"size{index}")


def _minimum(kind: str) -> int:
    adapter = registry.ADAPTERS.get(kind)
    return adapter.min_members if adapter is not None else 0


def _problem(runtime: Runtime, name: str, types: dict[str, str]) -> str:
    if name not in types:
        return "no [[destinations]] entry of this name"
    unset = runtime.settings.misconfigured.get(name)
    if unset:
        return f"cannot send: {', '.join(unset)} not set"
    return ""


routes = [
    Route("/admin/audiences", admin._signed_in(audiences_page), methods=["GET"]),
    Route("/admin/audiences/sync", admin._operator_only(sync_audience), methods=["POST"]),
]
