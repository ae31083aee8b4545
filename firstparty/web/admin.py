"""The operator UI at `/admin/`: events, deliveries, failures with replay, reports.

People sign in with an operator account (email and password, `operators.accounts`) or, to break
the glass, with FIRSTPARTY_ADMIN_TOKEN; the session cookie (`sessions`) says who they are.
Signing out stores the nonce as revoked (`signin`), which every process honours. Wrong passwords
and tokens make their client address (and a password's account) wait longer and longer
(`signin`). Every page needs a session (`_signed_in`); every change also needs the operator role
(`_operator_only`): a viewer reads everything and changes nothing. Sign-ins, sign-outs and changes
go to the audit log (`operators.audit`). Every POST carries a CSRF token derived from the session
(or, on the login form, from a short-lived login cookie). Pages are Jinja templates with
autoescaping; there is no script.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import jinja2
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from firstparty.api import admin_input
from firstparty.delivery import outbox, replay
from firstparty.delivery.outbox import DeliveryStatus
from firstparty.errors import InputError
from firstparty.reports import browse, period, summary
from firstparty.runtime import Runtime
from firstparty.settings import Settings
from firstparty.store import db
from firstparty.web import sessions, shown

SESSION_COOKIE = "fp_admin"
LOGIN_COOKIE = "fp_admin_login"
LOGIN_SECONDS = 3600
PAGE_SIZE = 50
PREVIEW_ROWS = 250  # failed deliveries a destination's replay preview judges (the page's cost)
MAX_FORM_BYTES = 16 * 1024
HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

Handler = Callable[[Request], Awaitable[Response]]


@jinja2.pass_context
def _when(context: jinja2.runtime.Context, value: datetime | str | None) -> Markup:
    """A time in the zone of `reports.time_zone` (`shown.when`)."""
    return shown.when(value, context.get("shown_zone", UTC))


def _templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["pretty"] = shown.pretty
    env.filters["when"] = _when
    env.globals["short_error"] = shown.short_error
    return Jinja2Templates(env=env)


TEMPLATES = _templates()


# CSRF tokens (the session cookies themselves: `sessions`).


def _csrf_ok(settings: Settings, seed: str | None, given: str | None) -> bool:
    if not seed or not given:
        return False
    return hmac.compare_digest(given.encode(), sessions.csrf_token(settings, seed).encode())


def external_https(request: Request, settings: Settings) -> bool:
    """Whether people reach this server over https: the configured public URL says so, a proxy
    we trust says so (X-Forwarded-Proto), or the request itself came over https."""
    if settings.public_url and settings.public_url.startswith("https://"):
        return True
    if settings.collect.trust_forwarded_for:
        forwarded = request.headers.get("x-forwarded-proto", "")
        if "https" in (p.strip().lower() for p in forwarded.split(",")):
            return True
    return request.url.scheme == "https"


def _set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/admin",
        httponly=True,
        samesite="strict",
        secure=external_https(request, _settings(request)),
    )


def _delete_cookie(request: Request, response: Response, name: str) -> None:
    secure = external_https(request, _settings(request))
    response.delete_cookie(name, path="/admin", httponly=True, samesite="strict", secure=secure)


# Plumbing shared by the pages.


def _settings(request: Request) -> Settings:
    runtime: Runtime = request.app.state.runtime
    return runtime.settings


async def _form(request: Request) -> dict[str, str]:
    """A urlencoded form body (the only kind these pages send); the first value of each field."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return {}
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return {}
    fields: dict[str, str] = {}
    for key, value in parse_qsl(body.decode("utf-8", "replace")):
        fields.setdefault(key, value)
    return fields


def _render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    session = request.cookies.get(SESSION_COOKIE)
    settings = _settings(request)
    who: sessions.Principal | None = getattr(request.state, "principal", None)
    base = {
        "csrf": sessions.csrf_token(settings, session) if session else "",
        "signed_in": who is not None,
        "who": who,
        "can_change": who is not None and who.can_change,
        "path": request.url.path,
        "shown_zone": period.zone(settings.reports.time_zone),
    }
    return TEMPLATES.TemplateResponse(
        request, name, {**base, **context}, status_code=status, headers=HEADERS
    )


def _error(request: Request, status: int, message: str) -> Response:
    return _render(request, "admin_error.html", {"status": status, "message": message}, status)


def _to_login() -> Response:
    return RedirectResponse("/admin/login", 303, headers={"Cache-Control": "no-store"})


def _signed_in(handler: Handler) -> Handler:
    """Refuses without a session (to the login page) and, on POST, without the CSRF token;
    `request.state.principal` is who the session stands for."""

    async def guarded(request: Request) -> Response:
        if request.method == "GET":  # a page only reads (`db.reading`: no SQLite write lock)
            with db.reading():
                return await checked(request)
        return await checked(request)

    async def checked(request: Request) -> Response:
        settings = _settings(request)
        session = request.cookies.get(SESSION_COOKIE)
        who = await sessions.principal(request.app.state.runtime, session)
        if who is None:
            return _to_login()
        request.state.principal = who
        if request.method == "POST":
            form = await _form(request)
            if not _csrf_ok(settings, session, form.get("csrf")):
                return _error(request, 403, "The form expired or did not come from this page.")
        try:
            return await handler(request)
        except InputError as exc:  # a malformed filter or cursor in the address bar
            message = "; ".join(f"{d.field}: {d.message}" for d in exc.details) or exc.error
            return _error(request, exc.status, message)

    return guarded


def _operator_only(handler: Handler) -> Handler:
    """A change: signed in (`_signed_in`) with the operator role; a viewer gets a 403 page and
    nothing is done."""

    async def guarded(request: Request) -> Response:
        if not principal(request).can_change:
            message = (
                f"You are signed in as a {principal(request).role}: viewers can read every page "
                "but not change anything. Ask an operator to do this, or to give you their role."
            )
            return _error(request, 403, message)
        return await handler(request)

    checked = _signed_in(guarded)
    checked.operator_only = True  # type: ignore[attr-defined]  # tests/operators checks routes
    return checked


def principal(request: Request) -> sessions.Principal:
    """Who this signed-in request acts as (set by `_signed_in`)."""
    who: sessions.Principal = request.state.principal
    return who


def _filters(request: Request, *names: str) -> dict[str, str]:
    """The non-empty query parameters among `names`."""
    return {n: v for n in names if (v := request.query_params.get(n, "").strip())}


def _next_link(path: str, filters: dict[str, str], items: list[dict[str, Any]]) -> str | None:
    if len(items) <= PAGE_SIZE:
        return None
    return f"{path}?{urlencode({**filters, 'cursor': items[PAGE_SIZE - 1]['cursor']})}"


# Pages.


async def events_page(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    filters = _filters(request, "name", "source", "event_id", "visitor_id", "user_id")
    query = browse.EventFilters(
        name=admin_input.text("name", filters.get("name")),
        event_id=admin_input.text("event_id", filters.get("event_id")),
        source=admin_input.text("source", filters.get("source")),
        visitor_id=admin_input.row_id("visitor_id", filters.get("visitor_id")),
        user_id=admin_input.row_id("user_id", filters.get("user_id")),
        cursor=admin_input.row_id("cursor", request.query_params.get("cursor")),
    )
    items = await asyncio.to_thread(browse.events, runtime.engine, query, PAGE_SIZE + 1)
    context = {
        "filters": filters,
        "items": items[:PAGE_SIZE],
        "next": _next_link("/admin/", filters, items),
    }
    return _render(request, "admin_events.html", context)


async def event_page(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    pk = admin_input.row_id("id", request.path_params["id"])
    found = await asyncio.to_thread(browse.event, runtime.engine, pk) if pk else None
    if found is None:
        return _error(request, 404, "No such event.")
    waiting = [status.value for status in outbox.ACTIVE]  # a next attempt is planned
    return _render(request, "admin_event.html", {"event": found, "waiting": waiting})


async def deliveries_page(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    filters = _filters(request, "status", "destination", "event_id")
    context: dict[str, Any] = {
        "filters": filters,
        "statuses": browse.TRACK_STATUSES,
        "destinations": sorted(runtime.adapters),
        "modes": _modes(runtime),
        "items": [],
        "next": None,
    }
    if filters.get("status", DeliveryStatus.DELIVERED) not in browse.TRACK_STATUSES:
        context["error"] = "Status must be one of " + ", ".join(browse.TRACK_STATUSES) + "."
        return _render(request, "admin_deliveries.html", context, 422)
    cursor = admin_input.track_cursor(request.query_params.get("cursor"))
    query = browse.TrackFilters(
        status=filters.get("status"),
        destination=admin_input.text("destination", filters.get("destination")),
        event_id=admin_input.text("event_id", filters.get("event_id")),
        cursor=None if cursor is None else str(cursor),
    )
    items = await asyncio.to_thread(browse.tracks, runtime.engine, query, PAGE_SIZE + 1)
    context.update(items=items[:PAGE_SIZE], next=_next_link("/admin/deliveries", filters, items))
    return _render(request, "admin_deliveries.html", context, 200)


def _modes(runtime: Runtime) -> list[dict[str, str | None]]:
    """Each destination's type and, when it is in its platform's test mode, how."""
    return [
        {"name": name, "type": adapter.type, "test_mode": adapter.test_mode}
        for name, adapter in sorted(runtime.adapters.items())
    ]


async def failures_page(request: Request) -> Response:
    return await _failures(request, None)


async def replay_failed(request: Request) -> Response:
    """Re-queues failed work of one destination (or all, or one delivery), then wakes the
    workers; the page then says what was re-queued and what was skipped, and why."""
    runtime: Runtime = request.app.state.runtime
    form = await _form(request)
    destination = form.get("destination") or None
    if destination is not None and destination not in runtime.adapters:
        return _error(request, 422, "That destination is not configured; it cannot be replayed.")
    one = form.get("delivery") or None
    if one is not None and not (one.isdigit() and len(one) <= 18):
        return _error(request, 422, "delivery: a delivery id (digits).")
    result = await asyncio.to_thread(
        replay.replay,
        runtime.engine,
        settings=runtime.settings,
        adapters=runtime.adapters,
        destination=destination,
        delivery_id=None if one is None else int(one),
        actor=principal(request).actor,
    )
    if result.requeued:
        await runtime.notifier.notify()
    return await _failures(request, {"destination": destination, "result": result, "one": one})


async def _failures(request: Request, replayed: dict[str, Any] | None) -> Response:
    runtime: Runtime = request.app.state.runtime

    def gather() -> dict[str, Any]:
        groups = summary.failures(runtime.engine)
        totals: dict[str, int] = {}
        for group in groups:
            totals[group.destination] = totals.get(group.destination, 0) + group.count
        settings, adapters = runtime.settings, runtime.adapters
        previews = {
            name: replay.preview(
                runtime.engine,
                settings=settings,
                adapters=adapters,
                destination=name,
                limit=PREVIEW_ROWS,
            )
            for name in totals
            if name in adapters
        }
        listed = replay.failed(
            runtime.engine, settings=settings, adapters=adapters, limit=PAGE_SIZE
        )
        return {"groups": groups, "totals": totals, "previews": previews, "failed": listed}

    context = {
        **(await asyncio.to_thread(gather)),
        "configured": set(runtime.adapters),
        "replayed": replayed,
    }
    return _render(request, "admin_failures.html", context)


async def to_index(request: Request) -> Response:
    return RedirectResponse("/admin/", 308)


routes = [
    Route("/admin", to_index, methods=["GET", "HEAD"]),
    Route("/admin/", _signed_in(events_page), methods=["GET"]),
    Route("/admin/events/{id}", _signed_in(event_page), methods=["GET"]),
    Route("/admin/deliveries", _signed_in(deliveries_page), methods=["GET"]),
    Route("/admin/failures", _signed_in(failures_page), methods=["GET"]),
    Route("/admin/replay", _operator_only(replay_failed), methods=["POST"]),
]
