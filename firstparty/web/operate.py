"""Operator pages: the sources and their keys, and the destinations with a test-event button.

Thin handlers over the services the CLI uses (`collect.keys`, `delivery.probe`): the same
rules and messages in both. Every change is a POST carrying the session's CSRF token
(`admin._signed_in`); a new key is shown once, on the page that made it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from firstparty.collect import keys
from firstparty.delivery import probe
from firstparty.errors import ConfigError
from firstparty.runtime import Runtime
from firstparty.web import admin

ACTIONS = ("rotate", "disable", "enable", "delete")


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def sources_page(request: Request) -> Response:
    return await _sources(request, {})


async def source_action(request: Request) -> Response:
    """rotate, disable, enable or delete one database source, then the list again."""
    form = await admin._form(request)
    runtime = _runtime(request)
    name, action = form.get("name", ""), form.get("action", "")
    where = {"settings": runtime.settings, "engine": runtime.engine, "name": name}
    if action not in ACTIONS:
        return admin._error(request, 422, f"action: one of {', '.join(ACTIONS)}")
    try:
        done = await asyncio.to_thread(_act, action, where)
    except ConfigError as exc:
        return await _sources(request, {"error": str(exc)}, 409)
    return await _sources(request, done)


def _act(action: str, where: dict[str, Any]) -> dict[str, Any]:
    name = where["name"]
    if action == "rotate":
        return {"done": f"New write key of {name} (shown once):", "key": keys.rotate(**where)}
    if action == "delete":
        keys.delete(**where)
        return {"done": f"Deleted {name}; its events stay."}
    state = keys.SourceState(action + "d")
    keys.set_state(**where, state=state)
    return {"done": f"{name} is {state}; every server follows within seconds."}


async def _sources(request: Request, outcome: dict[str, Any], status: int = 200) -> Response:
    runtime = _runtime(request)
    views = await asyncio.to_thread(keys.listing, settings=runtime.settings, engine=runtime.engine)
    context = {"sources": views, "error": None, "done": None, "key": None, **outcome}
    return admin._render(request, "admin_sources.html", context, status)


async def destinations_page(request: Request) -> Response:
    return _destinations(request, {})


async def test_event(request: Request) -> Response:
    """Send one synthetic event to a destination and show the exchange."""
    form = await admin._form(request)
    settings = _runtime(request).settings
    found = {d.name: d for d in settings.destinations}.get(form.get("name", ""))
    if found is None:
        return admin._error(request, 404, "No such destination.")
    if found.name in settings.misconfigured:
        unset = ", ".join(settings.misconfigured[found.name])
        return _destinations(request, {"error": f"{found.name} cannot send: {unset} not set"}, 409)
    try:
        result = await probe.send_test_event(
            found,
            delivery=settings.delivery,
            code=form.get("test_event_code") or None,
            live=form.get("live") == "on",
        )
    except ConfigError as exc:
        return _destinations(request, {"error": str(exc)}, 409)
    return _destinations(request, {"probe": result})


def _destinations(request: Request, outcome: dict[str, Any], status: int = 200) -> Response:
    settings = _runtime(request).settings
    rows = [
        {
            "name": d.name,
            "type": d.type,
            "unset": settings.misconfigured.get(d.name),
            "needs_code": "test_event_code" in type(d).model_fields
            and not getattr(d, "test_event_code", None),
        }
        for d in settings.destinations
    ]
    context = {"destinations": rows, "error": None, "probe": None, **outcome}
    return admin._render(request, "admin_destinations.html", context, status)


routes = [
    Route("/admin/sources", admin._signed_in(sources_page), methods=["GET"]),
    Route("/admin/sources", admin._signed_in(source_action), methods=["POST"]),
    Route("/admin/destinations", admin._signed_in(destinations_page), methods=["GET"]),
    Route("/admin/destinations/test", admin._signed_in(test_event), methods=["POST"]),
]
