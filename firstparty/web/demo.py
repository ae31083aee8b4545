"""The demo marketing site at `/demo/` and its live feed `/demo/events.json`.

On by default with SQLite, off by default with a server database (`demo = true` turns it on,
`demo = false` off). The page carries the real snippet, its script URL relative (or under
`public_url`), never built from the Host header; the feed shows the caller's own events only,
found by the signed `fp_id` cookie the collector set, so one visitor never sees another's.
"""

from __future__ import annotations

import asyncio
import html
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from firstparty.collect import keys
from firstparty.identity import cookie
from firstparty.runtime import Runtime
from firstparty.settings import Settings
from firstparty.store import models as m
from firstparty.tracker import serve

PAGE = Path(__file__).with_name("demo") / "index.html"
FEED_SIZE = 25
_KEY = re.compile(r"^[A-Za-z0-9_\-.]{8,128}$")
NO_STORE = {"Cache-Control": "no-store"}


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    if not runtime.settings.demo_on:
        raise HTTPException(404, "the demo is off (turn it on with demo = true)")
    return runtime


def write_key(settings: Settings, origin: str, given: str | None) -> str | None:
    """The key the demo page uses: `?key=`, else a browser source allowing this origin."""
    if given and _KEY.match(given):
        return given
    browser = [s for s in settings.sources if s.kind == "browser"]
    for source in browser:
        if origin in source.origins:
            return source.write_key.get_secret_value()
    return None


def render(key: str | None, tracker_src: str, source: str | None = None) -> str:
    """The demo page with its snippet filled in, or the setup help when no key is known: how to
    create a source for this origin, or, when `source` already allows it, how to get a new key
    (a database source's key is shown once, at its creation: `sources rotate` makes another)."""
    shown = html.escape(key or "WRITE_KEY", quote=True)
    snippet = f'<script async src="{tracker_src}" data-key="{shown}"></script>'
    page = PAGE.read_text(encoding="utf-8")
    page = page.replace("%%SNIPPET_TEXT%%", html.escape(snippet))
    page = page.replace("%%SNIPPET%%", snippet if key else "")
    if source is None:
        note = (
            "No browser source allows this origin yet. Create one, then open this page with "
            "its key:"
        )
        command = "firstparty sources create demo --kind browser --origin ORIGIN"
    else:
        note = (
            f"The browser source {source} allows this origin, but this address carries no key "
            "(a key is printed once, when it is made). Make a new one, then open this page with it:"
        )
        command = f"firstparty sources rotate {source}"
    page = page.replace("%%SETUP_NOTE%%", html.escape(note))
    page = page.replace("%%SETUP_COMMAND%%", html.escape(command))
    return page.replace("%%SETUP_HIDDEN%%", "hidden" if key else "")


def _source_for(runtime: Runtime, origin: str) -> str | None:
    """The database source (the demo's, usually) that allows this origin, if any."""
    views = keys.listing(settings=runtime.settings, engine=runtime.engine)
    found = [v for v in views if v.kind == "browser" and origin in v.origins]
    return found[0].name if found else None


async def index(request: Request) -> Response:
    settings = _runtime(request).settings
    # The origin only picks a browser source's (public) key; it is not written into the page.
    origin = settings.public_url or f"{request.url.scheme}://{request.url.netloc}"
    key = write_key(settings, origin, request.query_params.get("key"))
    source = None if key else await asyncio.to_thread(_source_for, _runtime(request), origin)
    body = render(key, (settings.public_url or "") + serve.bundle().path, source)
    return Response(body, media_type="text/html; charset=utf-8", headers=NO_STORE)


async def to_index(request: Request) -> Response:
    _runtime(request)
    query = request.url.query
    return RedirectResponse("/demo/" + (f"?{query}" if query else ""), 308)


def visitor_feed(engine: Engine, visitor_id: str, limit: int = FEED_SIZE) -> dict[str, Any]:
    """The visitor's newest events and the click ids seen for it."""
    events = (
        sa.select(m.events)
        .where(m.events.c.visitor_id == visitor_id)
        .order_by(m.events.c.received_at.desc(), m.events.c.id.desc())
        .limit(limit)
    )
    clicks = sa.select(m.click_ids).where(m.click_ids.c.visitor_id == visitor_id)
    with engine.connect() as conn:
        rows = conn.execute(events).mappings().all()
        click_rows = conn.execute(clicks.order_by(m.click_ids.c.id)).mappings().all()
    return {
        "visitor_id": visitor_id,
        "events": [_event(dict(row)) for row in rows],
        "click_ids": [
            {"kind": c["kind"], "value": c["value"], "first_seen_at": _iso(c["first_seen_at"])}
            for c in click_rows
        ],
    }


def _event(row: dict[str, Any]) -> dict[str, Any]:
    request = row["request"] or {}
    context = {k: v for k, v in (row["context"] or {}).items() if k not in ("ip", "user_agent")}
    return {
        "id": row["id"],
        "event_id": row["event_id"],
        "type": row["type"],
        "name": row["name"],
        "received_at": _iso(row["received_at"]),
        "url": request.get("url"),
        "user": sorted(row["user"] or {}),  # which identifiers arrived (hashed), not their values
        "context": context,
        "consent": row["consent"] or {},
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


async def events(request: Request) -> Response:
    runtime = _runtime(request)
    settings = runtime.settings
    visitor_id = cookie.read(
        settings.secret_key.get_secret_value(), request.cookies.get(settings.cookie.name)
    )
    if visitor_id is None:
        return JSONResponse({"visitor_id": None, "events": [], "click_ids": []}, headers=NO_STORE)
    feed = await run_in_threadpool(visitor_feed, runtime.engine, visitor_id)
    return JSONResponse(feed, headers=NO_STORE)


routes: list[Route] = [
    Route("/demo", to_index, methods=["GET", "HEAD"]),
    Route("/demo/", index, methods=["GET", "HEAD"]),
    Route("/demo/events.json", events, methods=["GET"]),
]
