"""The audit page `/admin/audit`: who signed in and what they changed, newest first, filtered by
action or actor, in keyset pages. Both roles read it."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from firstparty.api import admin_input
from firstparty.operators import audit
from firstparty.runtime import Runtime
from firstparty.web import admin

ACTIONS = tuple(a.value for a in audit.Action)


async def audit_page(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    filters = admin._filters(request, "action", "actor")
    action = admin_input.choice("action", filters.get("action"), ACTIONS)
    cursor = admin_input.track_cursor(request.query_params.get("cursor"))
    query = audit.Filters(
        action=audit.Action(action) if action else None,
        actor=admin_input.text("actor", filters.get("actor")),
        before=cursor,
    )
    rows, actors = await asyncio.to_thread(_read, runtime, query)
    context = {
        "filters": filters,
        "actions": ACTIONS,
        "actors": actors,
        "items": rows[: admin.PAGE_SIZE],
        "next": admin._next_link("/admin/audit", filters, rows),
    }
    return admin._render(request, "admin_audit.html", context)


def _read(runtime: Runtime, query: audit.Filters) -> tuple[list[dict[str, object]], list[str]]:
    rows = audit.page(runtime.engine, query, admin.PAGE_SIZE + 1)
    return rows, audit.actors(runtime.engine)


routes = [Route("/admin/audit", admin._signed_in(audit_page), methods=["GET"])]
