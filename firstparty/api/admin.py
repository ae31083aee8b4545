"""The admin API (`/v1/admin/*`), behind the bearer token `FIRSTPARTY_ADMIN_TOKEN`: full rights,
written to the audit log as actor `api` (replays, erasures, wrong tokens)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from firstparty.api import admin_input as given_
from firstparty.delivery import replay
from firstparty.errors import FieldError, InputError
from firstparty.identity import pii
from firstparty.operators import audit
from firstparty.privacy import service as privacy
from firstparty.reports import browse
from firstparty.runtime import Runtime
from firstparty.store import db
from firstparty.web import signin

Handler = Callable[[Request], Awaitable[Response]]


def _authorised(handler: Handler) -> Handler:
    """Refuses without the bearer token; a wrong one counts toward its address's delay (429)."""

    async def guarded(request: Request) -> Response:
        runtime: Runtime = request.app.state.runtime
        settings = runtime.settings
        given = request.headers.get("authorization", "")
        if not settings.admin_on:
            raise InputError(401, "admin API disabled: set FIRSTPARTY_ADMIN_TOKEN")
        if not given:
            raise _unauthorised("missing admin token")
        right = given.startswith("Bearer ") and settings.admin_token_matches(given[7:])
        if not (right and await signin.clean_request(request, runtime)):
            await _guarded_try(request, runtime, right=right)
        if request.method == "GET":  # a list or an export only reads (`db.reading`)
            with db.reading():
                return await handler(request)
        return await handler(request)

    return guarded


async def _guarded_try(request: Request, runtime: Runtime, *, right: bool) -> None:
    """A try from an address with failures, or a wrong token: recorded first, then judged."""
    attempt = await _try(request, runtime)
    if not right:
        await asyncio.to_thread(
            audit.write,
            runtime.engine,
            actor=audit.API,
            action=audit.Action.SIGN_IN_FAILED,
            detail={"surface": "api"},
        )
        raise _unauthorised("wrong admin token")
    await asyncio.to_thread(signin.succeeded, runtime.engine, attempt)


def _unauthorised(message: str) -> InputError:
    return InputError(401, message, headers={"WWW-Authenticate": "Bearer"})


async def _try(request: Request, runtime: Runtime) -> signin.Attempt:
    """This token try let through, or refused with 429 while its address waits."""
    attempt = await signin.begin_request(request, runtime, signin.Surface.API)
    if attempt.refused:
        raise InputError(
            429,
            f"too many wrong admin tokens from this address: retry in {attempt.retry_after} s",
            headers={"Retry-After": str(attempt.retry_after)},
        )
    return attempt


def _time(request: Request, name: str) -> datetime | None:
    return given_.time(name, request.query_params.get(name))


def _limit(request: Request) -> int:
    return given_.limit(request.query_params.get("limit"))


def _page(items: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    more = len(items) > limit
    items = items[:limit]
    return {"items": items, "next_cursor": items[-1]["cursor"] if more and items else None}


async def list_events(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    query = request.query_params
    limit = _limit(request)
    filters = browse.EventFilters(
        name=given_.text("name", query.get("name")),
        source=given_.text("source", query.get("source")),
        event_id=given_.text("event_id", query.get("event_id")),
        visitor_id=given_.row_id("visitor_id", query.get("visitor_id")),
        user_id=given_.row_id("user_id", query.get("user_id")),
        since=_time(request, "since"),
        until=_time(request, "until"),
        cursor=given_.row_id("cursor", query.get("cursor")),
    )
    items = await asyncio.to_thread(browse.events, runtime.engine, filters, limit + 1)
    return JSONResponse(_page(items, limit))


async def get_event(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    pk = request.path_params["id"]
    found = await asyncio.to_thread(browse.event, runtime.engine, pk) if _is_id(pk) else None
    if found is None:
        raise InputError(404, "no such event")
    return JSONResponse(found)


async def list_tracks(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    query = request.query_params
    status = given_.choice("status", query.get("status"), browse.TRACK_STATUSES)
    limit = _limit(request)
    cursor = given_.track_cursor(query.get("cursor"))
    filters = browse.TrackFilters(
        status=status,
        destination=given_.text("destination", query.get("destination")),
        event_id=given_.text("event_id", query.get("event_id")),
        since=_time(request, "since"),
        until=_time(request, "until"),
        cursor=None if cursor is None else str(cursor),
    )
    items = await asyncio.to_thread(browse.tracks, runtime.engine, filters, limit + 1)
    return JSONResponse(_page(items, limit))


async def get_track(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    number = given_.track_id(request.path_params["id"])
    found = None
    if number is not None:
        found = await asyncio.to_thread(browse.one_track, runtime.engine, number)
    if found is None:
        raise InputError(404, "no such outgoing request")
    return JSONResponse(found)


async def _query_and_body(request: Request) -> dict[str, Any]:
    """The query parameters, overridden by a JSON object body if one is sent."""
    given: dict[str, Any] = dict(request.query_params)
    body = await request.body()
    if body:
        try:
            parsed = json.loads(body.decode("utf-8"))  # strict: json.loads(bytes) is not
        except (ValueError, RecursionError):
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
    destination = given_.text("destination", given.get("destination"))
    if destination is not None and destination not in runtime.adapters:
        raise given_.invalid("destination", "no such destination")
    result = await asyncio.to_thread(
        replay.replay,
        runtime.engine,
        settings=runtime.settings,
        adapters=runtime.adapters,
        destination=destination,
        since=given_.time("since", given.get("since")),
        until=given_.time("until", given.get("until")),
        event_name=given_.text("event", given.get("event")),
        dry_run=_flag(given.get("dry_run")),
        actor=audit.API,
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


def _flag(raw: object) -> bool:
    """`dry_run`: true, false, or as a query string 1/0, true/false, yes/no (absent: false)."""
    if raw is None or isinstance(raw, bool):
        return bool(raw)
    if isinstance(raw, str) and raw.lower() in ("", "0", "false", "no", "1", "true", "yes"):
        return raw.lower() in ("1", "true", "yes")
    raise given_.invalid("dry_run", "must be true or false")


def _is_id(value: str) -> bool:
    try:
        return given_.row_id("id", value) is not None
    except InputError:
        return False


PERSON_FIELDS = ("user_id", "visitor_id", "phone", "email")


async def _person(request: Request) -> privacy.Who:
    """The person named by the query or a JSON body: user_id, visitor_id, phone or email."""
    given = await _query_and_body(request)
    unknown = set(given) - set(PERSON_FIELDS)
    if unknown:
        raise InputError(
            422, "validation failed", [FieldError(k, "unknown field") for k in sorted(unknown)]
        )
    bad = [k for k, v in given.items() if not isinstance(v, str) or not _text_ok(k, v)]
    if bad:
        fields = [FieldError(k, "must be a string of at most 256 characters") for k in sorted(bad)]
        raise InputError(422, "validation failed", fields)
    who = privacy.Who(**{k: v for k, v in given.items() if v})
    if who == privacy.Who():
        detail = FieldError("user_id", "give user_id, visitor_id, phone or email")
        raise InputError(422, "validation failed", [detail])
    return who


def _text_ok(field: str, value: str) -> bool:
    try:
        given_.text(field, value)
    except InputError:
        return False
    return True


async def _run_privacy(request: Request, action: Callable[..., Any], **extra: Any) -> Any:
    runtime: Runtime = request.app.state.runtime
    who = await _person(request)
    try:
        return await asyncio.to_thread(
            action,
            runtime.engine,
            who=who,
            secret=runtime.settings.secret_key.get_secret_value(),
            default_region=runtime.settings.otp.default_region,
            **extra,
        )
    except pii.InvalidValue as exc:
        field = "phone" if who.phone else "email"
        raise InputError(422, "validation failed", [FieldError(field, str(exc))]) from None


async def privacy_export(request: Request) -> Response:
    """Everything held about one person (a user and its devices, or a visitor), as JSON."""
    return JSONResponse(await _run_privacy(request, privacy.export_person))


async def privacy_erase(request: Request) -> Response:
    """Delete one person's rows; answers the number removed per table."""
    removed = await _run_privacy(request, privacy.erase_person, actor=audit.API)
    return JSONResponse({"removed": removed, "total": sum(removed.values())})


routes = [
    Route("/v1/admin/events", _authorised(list_events), methods=["GET"]),
    Route("/v1/admin/events/{id}", _authorised(get_event), methods=["GET"]),
    Route("/v1/admin/tracks", _authorised(list_tracks), methods=["GET"]),
    Route("/v1/admin/tracks/{id}", _authorised(get_track), methods=["GET"]),
    Route("/v1/admin/replay", _authorised(replay_failed), methods=["POST"]),
    Route("/v1/admin/privacy/export", _authorised(privacy_export), methods=["GET"]),
    Route("/v1/admin/privacy/erase", _authorised(privacy_erase), methods=["POST"]),
]
