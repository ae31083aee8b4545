"""The Audiences page at `/admin/audiences`: each audience's rules, its size over time, who
each platform can match, the last sync per destination, the platform minimum, a Sync button.

Thin handlers over the services the CLI uses (`audiences.preview`, `audiences.service`). The
page shows what the last sync stored (its size, each destination's run, the members each
platform acknowledged): loading it computes no membership, which reads the audience's events
(seconds for a large one). `?preview=NAME` (the Preview button, any role) computes one audience
now as `firstparty audiences preview NAME` does, with its coverage by identifier, and records
nothing. The Sync button runs `service.sync_now` as `firstparty audiences sync NAME` does: a POST
with the session's CSRF token, by the operator role (`admin._operator_only`), written to the
audit log.
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

from firstparty.audiences import history, preview, registry, service, sync
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
    problem: str  # why it cannot send ("" when it can)
    last: history.LastRun | None
    held: int  # members the platform acknowledged
    minimum: int  # matched people the platform needs before it targets the audience
    can_match: int | None  # a preview's count, else the last run's; None: never counted
    coverage: preview.Coverage | None  # by identifier: on a preview only

    @property
    def below_minimum(self) -> bool:
        return self.can_match is not None and self.can_match < self.minimum

    @property
    def detail(self) -> str:
        """The last run's detail; its minimum warning left out (the page's own line says it)."""
        return sync.without_minimum_warning(self.last.detail) if self.last else ""


@dataclass(frozen=True)
class AudienceView:
    audience: AudienceSettings
    size: int | None  # people matching: the preview's, else the last recorded; None: never
    consented: int | None
    counted_at: datetime | None  # when `size` was counted
    previewed: bool  # counted for this request (nothing recorded), not stored by a sync
    chart: Markup | None  # the size over time (reports.charts), None before any run
    sizes: list[history.SizePoint]  # the chart's numbers, for the table beside it
    destinations: list[DestinationView]


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def audiences_page(request: Request) -> Response:
    """The stored state; with `?preview=NAME`, that audience counted now."""
    wanted = request.query_params.get("preview") or None
    if wanted is not None:
        try:
            service.find(_runtime(request).settings, wanted)
        except ConfigError as exc:
            return admin._error(request, 404, str(exc))
    return await _page(request, {"previewing": wanted}, previewing=wanted)


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


async def _page(
    request: Request, outcome: dict[str, Any], status: int = 200, previewing: str | None = None
) -> Response:
    runtime = _runtime(request)
    views = await asyncio.to_thread(_views, runtime, previewing)
    context = {"views": views, "previewing": None, **outcome}
    return admin._render(request, "admin_audiences.html", context, status)


def _views(runtime: Runtime, previewing: str | None = None) -> list[AudienceView]:
    """Each audience as the last sync left it; the one being previewed counted now."""
    settings, engine = runtime.settings, runtime.engine
    runs, held = history.last_runs(engine), history.held(engine)
    zone = period.zone(settings.reports.time_zone)
    views = []
    for index, audience in enumerate(settings.audiences):
        sizes = history.sizes(engine, audience.name)
        chart = size_chart(audience.name, sizes, zone, index)
        counted: tuple[int | None, int | None, datetime | None] = (None, None, None)
        if audience.name == previewing:
            now = datetime.now(UTC)
            seen = preview.preview(settings, engine, name=audience.name, now=now)
            counted = (seen.size, seen.consented, now)
            covered = {c.destination: c for c in seen.coverage}
        else:
            if sizes:
                counted = (sizes[-1].size, sizes[-1].consented, sizes[-1].at)
            covered = {}
        destinations = [
            _destination(runtime, audience.name, name, runs, held, covered.get(name))
            for name in audience.destinations
        ]
        previewed = audience.name == previewing
        views.append(AudienceView(audience, *counted, previewed, chart, sizes, destinations))
    return views


def _destination(
    runtime: Runtime,
    audience: str,
    name: str,
    runs: dict[tuple[str, str], history.LastRun],
    held: dict[tuple[str, str], int],
    coverage: preview.Coverage | None,
) -> DestinationView:
    types = {d.name: d.type for d in runtime.settings.destinations}
    last = runs.get((audience, name))
    # A run still going has not counted its members yet (the pass counts them as it sends).
    stored = last.size if last is not None and last.finished_at is not None else None
    return DestinationView(
        name,
        types.get(name, "?"),
        _problem(runtime, name, types),
        last,
        held.get((audience, name), 0),
        _minimum(types.get(name, "")),
        coverage.usable if coverage is not None else stored,
        coverage,
    )


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
