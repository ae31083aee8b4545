"""The Alerts page: every rule with its settings, each alert's state now, and the messages sent
(alert_history), newest first, page by page. Read-only: rules live in the config file."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlencode

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from firstparty.alerts import state
from firstparty.alerts.rules import AlertState, Rule
from firstparty.api import admin_input
from firstparty.runtime import Runtime
from firstparty.settings import AlertSettings
from firstparty.web import admin


def rules(settings: AlertSettings) -> list[dict[str, Any]]:
    """Each built-in rule: name, on or off, what it watches, its thresholds and windows."""
    found = []
    for rule in Rule:
        model: BaseModel = getattr(settings, rule.value)
        values = model.model_dump()
        found.append(
            {
                "name": rule.value,
                "enabled": settings.enabled and values.pop("enabled"),
                "about": " ".join((type(model).__doc__ or "").replace("`", "").split()),
                "settings": values,
            }
        )
    return found


def channels(settings: AlertSettings) -> list[str]:
    """Where messages go, without the webhook URL (a secret itself) or any password."""
    found = []
    if settings.webhook is not None:
        signed = "signed" if settings.webhook.secret is not None else "unsigned"
        found.append(f"webhook ({settings.webhook.body} body, {signed})")
    if settings.email is not None:
        found.append(f"email to {len(settings.email.to)} address(es) via {settings.email.host}")
    return found


async def alerts_page(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    before = admin_input.track_cursor(request.query_params.get("cursor"))
    engine, limit = runtime.engine, admin.PAGE_SIZE

    def gather() -> tuple[list[state.Alert], list[state.Sent]]:
        return state.listing(engine), state.history(engine, before=before, limit=limit + 1)

    current, sent = await asyncio.to_thread(gather)
    current.sort(key=lambda a: (a.state != AlertState.FIRING, a.rule, a.subject))
    more = len(sent) > limit
    settings = runtime.settings.alerts
    context = {
        "alerting": settings,
        "rules": rules(settings),
        "channels": channels(settings),
        "current": current,
        "firing": sum(a.state == AlertState.FIRING for a in current),
        "sent": sent[:limit],
        "next": f"/admin/alerts?{urlencode({'cursor': sent[limit - 1].id})}" if more else None,
    }
    return admin._render(request, "admin_alerts.html", context)


routes = [Route("/admin/alerts", admin._signed_in(alerts_page), methods=["GET"])]
