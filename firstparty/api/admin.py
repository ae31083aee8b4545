"""The admin API (`/v1/admin/*`), behind the bearer token `FIRSTPARTY_ADMIN_TOKEN`."""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from firstparty.collect import prepare
from firstparty.delivery import replay
from firstparty.errors import FieldError, InputError
from firstparty.identity import pii
from firstparty.privacy import service as privacy
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
    return _parse_time(request.query_params.get(name), name)


def _parse_time(raw: object, name: str) -> datetime | None:
    if raw is None:
        return None
    try:
        return prepare.parse_timestamp(str(raw))
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


async def _query_and_body(request: Request) -> dict[str, Any]:
    """The query parameters, overridden by a JSON object body if one is sent."""
    given: dict[str, Any] = dict(request.query_params)
    body = await request.body()
    if body:
        try:
            parsed = json.loads(body)
        except ValueError:
            raise InputError(400, "malformed JSON") from None
        if not isinstance(parsed, dict):
            raise InputError(422, "validation failed", [FieldError("(body)", "must be an object")])
        given.update(parsed)
    return given


async def replay_failed(request: Request) -> Response:
    """Re-queue failed work with the CLI's filters (query or JSON body); answers the counts."""
    runtime: Runtime = request.app.state.runtime
    given = await _query_and_body(request)
    unknown = set(given) - {"destination", "since", "until", "event", "dry_run"}
    if unknown:
        fields = [FieldError(k, "unknown field") for k in sorted(unknown)]
        raise InputError(422, "validation failed", fields)
    wrong = [k for k in sorted(given) if k != "dry_run" and not isinstance(given[k], str)]
    if wrong:
        fields = [FieldError(k, "must be a string") for k in wrong]
        raise InputError(422, "validation failed", fields)
    destination = given.get("destination")
    if destination is not None and destination not in runtime.adapters:
        detail = FieldError("destination", "no such destination")
        raise InputError(422, "validation failed", [detail])
    result = await asyncio.to_thread(
        replay.replay,
        runtime.engine,
        settings=runtime.settings,
        adapters=runtime.adapters,
        destination=destination,
        since=_parse_time(given.get("since"), "since"),
        until=_parse_time(given.get("until"), "until"),
        event_name=given.get("event"),
        dry_run=str(given.get("dry_run", "")).lower() in ("1", "true", "yes"),
    )
    if result.requeued and not result.dry_run:
        await runtime.notifier.notify()
    return JSONResponse(
        {
            "matched": result.matched,
            "requeued": result.requeued,
            "skipped": result.skipped,
            "dry_run": result.dry_run,
        }
    )


PERSON_FIELDS = ("user_id", "visitor_id", "phone", "email")


async def _person(request: Request) -> privacy.Who:
    """The person named by the query or a JSON body: user_id, visitor_id, phone or email."""
    given = await _query_and_body(request)
    unknown = set(given) - set(PERSON_FIELDS)
    if unknown:
        raise InputError(
            422, "validation failed", [FieldError(k, "unknown field") for k in sorted(unknown)]
        )
    bad = [k for k, v in given.items() if not isinstance(v, str) or len(v) > 256]
    if bad:
        fields = [FieldError(k, "must be a string of at most 256 characters") for k in sorted(bad)]
        raise InputError(422, "validation failed", fields)
    who = privacy.Who(**{k: v for k, v in given.items() if v})
    if who == privacy.Who():
        detail = FieldError("user_id", "give user_id, visitor_id, phone or email")
        raise InputError(422, "validation failed", [detail])
    return who


async def _run_privacy(request: Request, action: Callable[..., Any]) -> Any:
    runtime: Runtime = request.app.state.runtime
    who = await _person(request)
    try:
        return await asyncio.to_thread(
            action,
            runtime.engine,
            who=who,
            secret=runtime.settings.secret_key.get_secret_value(),
            default_region=runtime.settings.otp.default_region,
        )
    except pii.InvalidValue as exc:
        field = "phone" if who.phone else "email"
        raise InputError(422, "validation failed", [FieldError(field, str(exc))]) from None


async def privacy_export(request: Request) -> Response:
    """Everything held about one person (a user and its devices, or a visitor), as JSON."""
    return JSONResponse(await _run_privacy(request, privacy.export_person))


async def privacy_erase(request: Request) -> Response:
    """Delete one person's rows; answers the number removed per table."""
    removed = await _run_privacy(request, privacy.erase_person)
    return JSONResponse({"removed": removed, "total": sum(removed.values())})


routes = [
    Route("/v1/admin/events", _authorised(list_events), methods=["GET"]),
    Route("/v1/admin/events/{id}", _authorised(get_event), methods=["GET"]),
    Route("/v1/admin/tracks", _authorised(list_tracks), methods=["GET"]),
    Route("/v1/admin/replay", _authorised(replay_failed), methods=["POST"]),
    Route("/v1/admin/privacy/export", _authorised(privacy_export), methods=["GET"]),
    Route("/v1/admin/privacy/erase", _authorised(privacy_erase), methods=["POST"]),
]
