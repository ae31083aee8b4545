"""The live debugger: `/admin/live` shows events as they arrive, each with its validation
warnings and, as they happen, its deliveries and the platforms' answers.

The page renders the last two minutes on the server (it works without JavaScript); a small
script of our own (`/admin/live.js`, allowed by the page's CSP and nothing else) follows
`/admin/live/stream`, server-sent events fed by `reports.live` polling the database once a
second, so it shows what every server process receives. A stream ends after `STREAM_SECONDS`
(the browser reconnects on its own); a comment line every `KEEPALIVE_SECONDS` keeps proxies
from closing an idle one. Both take the filters `source`, `name` and `type` as query parameters
(checked by `api.admin_input`: a bad one is a 422); the script passes the page's own on.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from firstparty.api import admin_input
from firstparty.reports import live
from firstparty.runtime import Runtime
from firstparty.web import admin

POLL_SECONDS = 1.0
KEEPALIVE_SECONDS = 15.0
STREAM_SECONDS = 600.0
SCRIPT = "live.js"
CSP = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; "
    "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _filters(request: Request) -> live.Filters:
    """The viewer's filters from the query string; a malformed one raises a 422 `InputError`."""
    raw = admin._filters(request, "source", "name", "type")
    return live.Filters(
        source=admin_input.text("source", raw.get("source")),
        name=admin_input.text("name", raw.get("name")),
        type=admin_input.choice("type", raw.get("type"), live.TYPES),
    )


async def page(request: Request) -> Response:
    engine = _runtime(request).engine
    filters = _filters(request)
    watch = live.Watch.starting(live.utcnow(), filters=filters)
    events, deliveries = await asyncio.to_thread(live.poll, engine, watch, live.utcnow())
    by_event: dict[str, list[dict[str, Any]]] = {}
    for delivery in deliveries:
        by_event.setdefault(delivery["event"], []).append(delivery)
    context = {
        "events": list(reversed(events)),
        "deliveries": by_event,
        "filters": filters,
        "types": live.TYPES,
    }
    response = admin._render(request, "admin_live.html", context)
    response.headers["Content-Security-Policy"] = CSP
    return response


async def stream(request: Request) -> Response:
    engine = _runtime(request).engine
    watch = live.Watch.starting(live.utcnow(), back=live.OVERLAP, filters=_filters(request))
    return StreamingResponse(
        _updates(request, engine, watch),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _updates(request: Request, engine: Any, watch: live.Watch) -> AsyncIterator[str]:
    """`update` messages with new events and changed deliveries; a keep-alive when idle."""
    loop = asyncio.get_running_loop()
    ends, quiet_since = loop.time() + STREAM_SECONDS, loop.time()
    told: dict[int, tuple[Any, ...]] = {}
    yield "retry: 2000\n\n"
    while loop.time() < ends and not await request.is_disconnected():
        events, deliveries = await asyncio.to_thread(live.poll, engine, watch, live.utcnow())
        changed = [d for d in deliveries if told.get(d["id"]) != _state(d)]
        told.update({d["id"]: _state(d) for d in changed})
        if events or changed:
            quiet_since = loop.time()
            payload = {"events": events, "deliveries": changed}
            yield f"event: update\ndata: {json.dumps(payload, default=str)}\n\n"
        elif loop.time() - quiet_since > KEEPALIVE_SECONDS:
            quiet_since = loop.time()
            yield ": keep-alive\n\n"
        await asyncio.sleep(POLL_SECONDS)


def _state(delivery: dict[str, Any]) -> tuple[Any, ...]:
    return (delivery["status"], delivery["attempts"], delivery["answer_status"], delivery["error"])


async def script(request: Request) -> Response:
    text = resources.files("firstparty.web").joinpath("static", SCRIPT).read_text()
    return Response(
        text,
        media_type="text/javascript",
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


routes = [
    Route("/admin/live", admin._signed_in(page), methods=["GET"]),
    Route("/admin/live/stream", admin._signed_in(stream), methods=["GET"]),
    Route("/admin/live.js", admin._signed_in(script), methods=["GET"]),
]
