"""The operator UI at `/admin/`: events, deliveries, failures with replay, reports.

Signing in with FIRSTPARTY_ADMIN_TOKEN sets a session cookie holding only a nonce, an expiry and
an HMAC (secret key) over both and a digest of the token, so rotating the token ends every
session; signing out stores the nonce as revoked (`signin`), which every process honours. Wrong
tokens make their client address wait longer and longer (`signin`). Every POST carries a CSRF
token derived from the session (or, on the login form, from a short-lived login cookie). Pages
are Jinja templates with autoescaping; there is no script.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import math
import secrets
import time
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
from firstparty.web import shown, signin

SESSION_COOKIE = "fp_admin"
LOGIN_COOKIE = "fp_admin_login"
SESSION_SECONDS = 12 * 3600
LOGIN_SECONDS = 3600
PAGE_SIZE = 50
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


# Session and CSRF tokens.


def _mac(settings: Settings, *parts: str) -> str:
    key = settings.secret_key.get_secret_value().encode()
    digest = hmac.new(key, "\x1f".join(parts).encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _token_tag(settings: Settings) -> str:
    return settings.admin_tag


def issue_session(settings: Settings, now: float) -> str:
    """A session cookie value: nonce.expiry.mac — never the admin token."""
    nonce, expiry = secrets.token_urlsafe(16), str(int(now) + SESSION_SECONDS)
    return (
        f"{nonce}.{expiry}.{_mac(settings, 'admin-session', nonce, expiry, _token_tag(settings))}"
    )


def session_valid(settings: Settings, value: str | None, now: float) -> bool:
    """Whether the cookie value is a session this server issued, unexpired, for today's token."""
    if not settings.admin_on or not value or value.count(".") != 2:
        return False
    nonce, expiry, mac = value.split(".")
    if not expiry.isdigit() or int(expiry) <= now:
        return False
    expected = _mac(settings, "admin-session", nonce, expiry, _token_tag(settings))
    return hmac.compare_digest(mac.encode(), expected.encode())


async def session_active(runtime: Runtime, value: str | None) -> bool:
    """A valid session (`session_valid`) that was not signed out, in any process."""
    if not session_valid(runtime.settings, value, time.time()):
        return False
    assert value is not None
    nonce = value.split(".")[0]
    return not await asyncio.to_thread(signin.revoked, runtime.engine, nonce)


def csrf_token(settings: Settings, seed: str) -> str:
    """The form token bound to a session (or login) cookie value."""
    return _mac(settings, "admin-csrf", seed)


def _csrf_ok(settings: Settings, seed: str | None, given: str | None) -> bool:
    if not seed or not given:
        return False
    return hmac.compare_digest(given.encode(), csrf_token(settings, seed).encode())


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
    base = {
        "csrf": csrf_token(settings, session) if session else "",
        "signed_in": getattr(request.state, "signed_in", False),
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
    """Refuses without a session (to the login page) and, on POST, without the CSRF token."""

    async def guarded(request: Request) -> Response:
        settings = _settings(request)
        session = request.cookies.get(SESSION_COOKIE)
        if not await session_active(request.app.state.runtime, session):
            return _to_login()
        request.state.signed_in = True
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


def _filters(request: Request, *names: str) -> dict[str, str]:
    """The non-empty query parameters among `names`."""
    return {n: v for n in names if (v := request.query_params.get(n, "").strip())}


def _next_link(path: str, filters: dict[str, str], items: list[dict[str, Any]]) -> str | None:
    if len(items) <= PAGE_SIZE:
        return None
    return f"{path}?{urlencode({**filters, 'cursor': items[PAGE_SIZE - 1]['cursor']})}"


# Sign in and out.


async def login_page(request: Request) -> Response:
    settings = _settings(request)
    if not settings.admin_on:
        return _error(request, 403, "The admin UI is off: set FIRSTPARTY_ADMIN_TOKEN to use it.")
    if await session_active(request.app.state.runtime, request.cookies.get(SESSION_COOKIE)):
        return RedirectResponse("/admin/", 303)
    return _login_form(request, "", 200)


def _login_form(
    request: Request, error: str, status: int, headers: dict[str, str] | None = None
) -> Response:
    seed = request.cookies.get(LOGIN_COOKIE) or ""
    if len(seed) != 22:
        seed = secrets.token_urlsafe(16)
    context = {"login_csrf": csrf_token(_settings(request), seed), "error": error}
    response = _render(request, "admin_login.html", context, status)
    response.headers.update(headers or {})
    _set_cookie(request, response, LOGIN_COOKIE, seed, LOGIN_SECONDS)
    return response


async def _token_try(request: Request) -> signin.Attempt:
    runtime: Runtime = request.app.state.runtime
    return await signin.begin_request(request, runtime, signin.Surface.UI)


def _wait_words(seconds: int) -> str:
    return f"{seconds} seconds" if seconds < 120 else f"{math.ceil(seconds / 60)} minutes"


async def login(request: Request) -> Response:
    settings = _settings(request)
    if not settings.admin_on:
        return _error(request, 403, "The admin UI is off: set FIRSTPARTY_ADMIN_TOKEN to use it.")
    form = await _form(request)
    if not _csrf_ok(settings, request.cookies.get(LOGIN_COOKIE), form.get("csrf")):
        return _login_form(request, "The form expired; please sign in again.", 403)
    attempt = await _token_try(request)
    if attempt.refused:
        wait = attempt.retry_after
        message = (
            "Too many wrong tokens from your address: sign-in is paused. "
            f"Try again in {_wait_words(wait)}."
        )
        return _login_form(request, message, 429, {"Retry-After": str(wait)})
    if not settings.admin_token_matches(form.get("token", "")):
        return _login_form(request, "Wrong admin token.", 401)
    runtime: Runtime = request.app.state.runtime
    await asyncio.to_thread(signin.succeeded, runtime.engine, attempt)
    response = RedirectResponse("/admin/", 303)
    _set_cookie(
        request, response, SESSION_COOKIE, issue_session(settings, time.time()), SESSION_SECONDS
    )
    _delete_cookie(request, response, LOGIN_COOKIE)
    return response


async def logout(request: Request) -> Response:
    """Ends the session here and in every process: its nonce is revoked until its expiry."""
    runtime: Runtime = request.app.state.runtime
    nonce, expiry, _ = request.cookies[SESSION_COOKIE].split(".")
    expires_at = datetime.fromtimestamp(int(expiry), UTC)
    await asyncio.to_thread(signin.revoke, runtime.engine, nonce=nonce, expires_at=expires_at)
    response = _to_login()
    _delete_cookie(request, response, SESSION_COOKIE)
    return response


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
                runtime.engine, settings=settings, adapters=adapters, destination=name
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
    Route("/admin/login", login_page, methods=["GET"]),
    Route("/admin/login", login, methods=["POST"]),
    Route("/admin/logout", _signed_in(logout), methods=["POST"]),
    Route("/admin/", _signed_in(events_page), methods=["GET"]),
    Route("/admin/events/{id}", _signed_in(event_page), methods=["GET"]),
    Route("/admin/deliveries", _signed_in(deliveries_page), methods=["GET"]),
    Route("/admin/failures", _signed_in(failures_page), methods=["GET"]),
    Route("/admin/replay", _signed_in(replay_failed), methods=["POST"]),
]
