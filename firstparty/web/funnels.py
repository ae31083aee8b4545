"""Funnel pages under `/admin/reports/funnels`: the list with a form to save one, each funnel's
steps for the period (`?format=csv` too; kept by the background round for the preset ranges,
see `reports.funnel_rounds`), Recompute now, and deleting a funnel saved from the UI."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from firstparty.errors import FieldError, InputError
from firstparty.operators import audit
from firstparty.reports import funnel_rounds, funnel_spec, funnel_store, funnels, period
from firstparty.runtime import Runtime
from firstparty.web import admin, reports
from firstparty.web.acquisition import csv_response

MAX_STEP_LINES = 20
_PENDING = (
    "This funnel is not computed yet for this range: the background round computes it within "
    "a minute or so."
)


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def funnels_page(request: Request) -> Response:
    return await _listing(request, {}, None, 200)


async def _listing(
    request: Request, form: dict[str, str], problem: str | None, status: int
) -> Response:
    runtime = _runtime(request)
    chosen = reports.period_of(request)
    found = await asyncio.to_thread(
        funnel_rounds.listing, settings=runtime.settings, engine=runtime.engine, period=chosen
    )
    now = datetime.now(UTC)
    context = {
        **reports.filter_context(request, chosen),
        "funnels": [(f, state, _age(at, now)) for f, state, at in found],
        "form": form,
        "problem": problem,
        "max_window": funnel_spec.MAX_WINDOW_HOURS,
    }
    return admin._render(request, "admin_funnels.html", context, status)


async def save_funnel(request: Request) -> Response:
    runtime = _runtime(request)
    form = await admin._form(request)
    try:
        funnel = _parsed(form)
    except ValueError as exc:
        return await _listing(request, form, str(exc), 400)
    existing = await asyncio.to_thread(funnels.all_funnels, runtime.settings, runtime.engine)
    if funnel.name in {f.name for f in existing}:
        return await _listing(request, form, f"a funnel named {funnel.name!r} exists", 409)
    try:
        await asyncio.to_thread(funnels.save, runtime.engine, funnel=funnel, now=datetime.now(UTC))
    except sa.exc.IntegrityError:  # saved meanwhile by another request
        return await _listing(request, form, f"a funnel named {funnel.name!r} exists", 409)
    await _audit(request, audit.Action.FUNNEL_SAVE, funnel.name)
    return RedirectResponse(f"/admin/reports/funnels/{quote(funnel.name)}", 303)


def _parsed(form: dict[str, str]) -> funnel_spec.Funnel:
    lines = [line for line in form.get("steps", "").splitlines() if line.strip()]
    if len(lines) > MAX_STEP_LINES:
        raise ValueError(f"at most {funnel_spec.MAX_STEPS} steps")
    raw_window = form.get("window_hours", "").strip() or "24"
    if not raw_window.isdigit() or len(raw_window) > 6:
        raise ValueError("window (hours) must be a whole number")
    return funnel_spec.parse(form.get("name", "").strip(), lines, int(raw_window), saved=True)


async def funnel_page(request: Request) -> Response:
    runtime = _runtime(request)
    chosen = reports.period_of(request)
    wanted = request.query_params.get("format", "html")
    if wanted not in ("html", "csv"):
        raise InputError(400, "bad report query", [FieldError("format", "must be html or csv")])
    funnel = await _named(request)
    shown = await asyncio.to_thread(
        funnel_rounds.view,
        settings=runtime.settings,
        engine=runtime.engine,
        funnel=funnel,
        period=chosen,
        now=datetime.now(UTC),
    )
    if wanted == "csv":
        if shown.result is None:
            return admin._error(request, 409, _PENDING)
        name = f"funnel-{funnel.name}-{chosen.first.isoformat()}-{chosen.last.isoformat()}.csv"
        return csv_response(name, _csv_rows(shown.result))
    context = {
        **reports.filter_context(request, chosen),
        "funnel": funnel,
        "shown": shown,
        "result": shown.result,
        "duration": duration,
        "max_rows": funnels.MAX_ROWS,
        "round_max_rows": funnel_rounds.ROUND_MAX_ROWS,
        "default_zone": runtime.settings.reports.time_zone,
        "age": _age(shown.kept.computed_at if shown.kept else None, datetime.now(UTC)),
        "csv_href": f"{request.url.path}?{urlencode({**chosen.query(), 'format': 'csv'})}",
    }
    return admin._render(request, "admin_funnel.html", context)


async def recompute(request: Request) -> Response:
    """Make the funnel due now: the next round (within a minute) computes its preset ranges."""
    runtime = _runtime(request)
    funnel = await _named(request)
    form = await admin._form(request)
    chosen = period.parse(
        {k: v for k, v in form.items() if k in ("range", "tz", "source", "from", "to")},
        default_zone=runtime.settings.reports.time_zone,
        now=datetime.now(UTC),
    )
    await asyncio.to_thread(
        funnel_store.request, runtime.engine, name=funnel.name, now=datetime.now(UTC)
    )
    query = urlencode(chosen.query())
    return RedirectResponse(f"/admin/reports/funnels/{quote(funnel.name)}?{query}", 303)


async def delete_funnel(request: Request) -> Response:
    runtime = _runtime(request)
    funnel = await _named(request)
    if not funnel.saved:
        return admin._error(
            request, 400, f"The funnel {funnel.name!r} is in the config file: remove it there."
        )
    await asyncio.to_thread(funnels.delete, runtime.engine, name=funnel.name)
    await _audit(request, audit.Action.FUNNEL_DELETE, funnel.name)
    return RedirectResponse("/admin/reports/funnels", 303)


async def _audit(request: Request, action: audit.Action, name: str) -> None:
    """The audit row of a funnel just saved or deleted."""
    await asyncio.to_thread(
        audit.write,
        _runtime(request).engine,
        actor=admin.principal(request).actor,
        action=action,
        subject=name,
    )


async def _named(request: Request) -> funnel_spec.Funnel:
    runtime = _runtime(request)
    name = request.path_params["name"]
    found = await asyncio.to_thread(funnels.all_funnels, runtime.settings, runtime.engine)
    for funnel in found:
        if funnel.name == name:
            return funnel
    raise InputError(404, "not found", [FieldError("name", "no funnel of that name")])


def _csv_rows(result: funnels.FunnelResult) -> Iterator[list[Any]]:
    channels = [channel for channel, _ in result.by_channel]
    yield ["step", "definition", "people", "from_previous", "from_first", "median_seconds"] + [
        f"channel:{c}" for c in channels
    ]
    for index, step in enumerate(result.steps):
        by_channel = [counts[index] for _, counts in result.by_channel]
        yield [
            index + 1,
            str(step.step),
            step.people,
            _ratio(step.from_previous),
            _ratio(step.from_first),
            "" if step.median_seconds is None else round(step.median_seconds),
            *by_channel,
        ]


def duration(seconds: float | None) -> str:
    """A median time in words: 45 s, 12 min, 3.5 h, 2.0 d."""
    if seconds is None:
        return "—"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _age(at: datetime | None, now: datetime) -> str:
    """How long ago, in words: "just now", "12 minutes ago", "3 hours ago"."""
    if at is None:
        return ""
    seconds = max(0.0, (now - at).total_seconds())
    if seconds < 60:
        return "just now"
    if seconds < 2 * 3600:
        minutes = int(seconds // 60)
        return f"{minutes} minute{'s' if minutes != 1 else ''} ago"
    if seconds < 2 * 86400:
        return f"{int(seconds // 3600)} hours ago"
    return f"{int(seconds // 86400)} days ago"


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


routes = [
    Route("/admin/reports/funnels", admin._signed_in(funnels_page), methods=["GET"]),
    Route("/admin/reports/funnels", admin._operator_only(save_funnel), methods=["POST"]),
    Route("/admin/reports/funnels/{name}", admin._signed_in(funnel_page), methods=["GET"]),
    Route(
        "/admin/reports/funnels/{name}/recompute",
        admin._operator_only(recompute),
        methods=["POST"],
    ),
    Route(
        "/admin/reports/funnels/{name}/delete",
        admin._operator_only(delete_funnel),
        methods=["POST"],
    ),
]
