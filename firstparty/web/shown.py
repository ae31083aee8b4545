"""How the admin pages show values: times to the second in one time zone (the full stored value
in a tooltip), JSON bodies indented, and a short error for a request answered without one."""

from __future__ import annotations

import json
from datetime import UTC, datetime, tzinfo
from typing import Any

from markupsafe import Markup

# What the error column shows of a response body when the request itself raised no error.
SHORT_ERROR_CHARS = 160


def when(value: datetime | str | None, zone: tzinfo = UTC) -> Markup:
    """`2026-11-02 09:00:05 UTC` in a <time> element whose title is the value as stored."""
    if value is None or value == "":
        return Markup("")
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is None:  # stored times are UTC
        moment = moment.replace(tzinfo=UTC)
    full = moment.isoformat()
    local = moment.astimezone(zone)
    text = f"{local:%Y-%m-%d %H:%M:%S} {local.tzname() or ''}".rstrip()
    return Markup('<time datetime="{}" title="{}">{}</time>').format(full, full, text)


def pretty(value: Any) -> str:
    """JSON indented (a string stays as it is: a body that is not JSON)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def short_error(error: str | None, status: int | None, body: str | None) -> str:
    """The request's own error, else, for an answer not 2xx, its status and the start of its
    body (`HTTP 500: upstream timeout`)."""
    if error:
        return error
    if status is None or 200 <= status < 300:
        return ""
    start = " ".join((body or "").split())
    if len(start) > SHORT_ERROR_CHARS:
        start = start[: SHORT_ERROR_CHARS - 1] + "…"
    return f"HTTP {status}: {start}" if start else f"HTTP {status}"
