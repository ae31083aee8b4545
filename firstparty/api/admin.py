"""The admin API (`/v1/admin/*`), behind the bearer token `FIRSTPARTY_ADMIN_TOKEN`."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from firstparty.errors import FieldError, InputError
from firstparty.reports import browse
from firstparty.runtime import Runtime

Handler = Callable[[Request], Awaitable[Response]]


def _authorised(handler: Handler) -> Handler:
    async def guarded(request: Request) -> Response:
        runtime: Runtime = request.app.state.runtime
        token = runtime.settings.admin_token
        given = request.headers.get("authorization", "")
        if token is None:
            raise InputError(401, "admin API disabled: set FIRSTPARTY_ADMIN_TOKEN")
        expected = f"Bearer {token.get_secret_value()}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise InputError(
                401, "missing or wrong admin token", headers={"WWW-Authenticate": "Bearer"}
            )
        return await handler(request)

    return guarded


def _time(request: Request, name: str) -> datetime | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        from firstparty.collect.prepare import parse_timestamp

        return parse_timestamp(raw)
    except ValueError:
        raise InputError(422, "validation failed", [FieldError(name, "must be ISO 8601")]) from None


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit", "50")
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise InputError(422, "validation failed", [FieldError("limit", "must be 1 to 1000")])
    return int(raw)


def _page(items: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    more = len(items) > limit
    items = items[:limit]
    return {"items": items, "next_cursor": items[-1]["cursor"] if more and items else None}


async def list_events(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    query = request.query_params
    limit = _limit(request)
    filters = browse.EventFilters(
        name=query.get("name"),
        source=query.get("source"),
        visitor_id=query.get("visitor_id"),
        user_id=query.get("user_id"),
        since=_time(request, "since"),
        until=_time(request, "until"),
        cursor=query.get("cursor"),
    )
    items = await asyncio.to_thread(browse.events, runtime.engine, filters, limit + 1)
    return JSONResponse(_page(items, limit))


async def get_event(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    found = await asyncio.to_thread(browse.event, runtime.engine, request.path_params["id"])
    if found is None:
        raise InputError(404, "no such event")
    return JSONResponse(found)


async def list_tracks(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    query = request.query_params
    status = query.get("status")
    if status and status not in browse.TRACK_STATUSES:
        choices = ", ".join(browse.TRACK_STATUSES)
        raise InputError(422, "validation failed", [FieldError("status", f"one of {choices}")])
    limit = _limit(request)
    filters = browse.TrackFilters(
        status=status,
        destination=query.get("destination"),
        event_id=query.get("event_id"),
        since=_time(request, "since"),
        until=_time(request, "until"),
        cursor=query.get("cursor"),
    )
    items = await asyncio.to_thread(browse.tracks, runtime.engine, filters, limit + 1)
    return JSONResponse(_page(items, limit))


routes = [
    Route("/v1/admin/events", _authorised(list_events), methods=["GET"]),
    Route("/v1/admin/events/{id}", _authorised(get_event), methods=["GET"]),
    Route("/v1/admin/tracks", _authorised(list_tracks), methods=["GET"]),
]
