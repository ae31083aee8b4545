"""What travels with a conversion: click ids and pixel cookies from all of the person's devices.

The devices of an event are its own visitor plus, when the person is known (`user_id`), every
visitor linked to that user, each for the span of time it belonged to them: a visitor that moved
to another user keeps its earlier clicks with the user it had then (its first span starts at its
first visit, so the ad click that preceded the first verification counts). The event's own
visitor always counts whole, as the platform's browser pixel would see it.

Rule for click ids: every click id seen on those devices, first seen no later than the conversion
and within its platform's window (`CLICK_WINDOWS`), is handed to the adapter sorted oldest first;
the adapter takes the most recent of each kind (`Event.click_id`). First touch stays on the
visitor row for reports (`touches_for`).

Rule for pixel cookies (`context_for`): the latest known value of each of `PIXEL_KEYS` from the
devices' events; the event's own visitor wins over other devices, and the event's own context
wins over both (the worker merges it last).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from firstparty.destinations.base import ClickId
from firstparty.store.models import click_ids, events, visitor_users, visitors

# How long after the click each platform still credits a conversion to it.
CLICK_WINDOWS: dict[str, timedelta] = {
    "gclid": timedelta(days=90),  # Google Ads: click-through window up to 90 days
    "gbraid": timedelta(days=90),
    "wbraid": timedelta(days=90),
    "fbclid": timedelta(days=90),  # Meta: the _fbc cookie lives 90 days
    "ttclid": timedelta(days=28),  # TikTok: 28-day click-through attribution
    "msclkid": timedelta(days=90),  # Microsoft Ads: up to 90 days
    "li_fat_id": timedelta(days=90),  # LinkedIn: up to 90 days
    "ScCid": timedelta(days=28),  # Snap: 28-day swipe window
    "epik": timedelta(days=30),  # Pinterest: 30-day click window
    "rdt_cid": timedelta(days=28),  # Reddit: 28-day click window
}
DEFAULT_WINDOW = timedelta(days=90)
# Browser clocks may run ahead of the server's: a click seen just after the event still counts.
CLOCK_SKEW = timedelta(minutes=10)
PIXEL_KEYS = ("fbp", "fbc", "ttp", "ga", "gcl_aw")
CONTEXT_LOOKBACK = timedelta(days=90)
CONTEXT_ROWS = 500  # newest events looked at per person: enough to find each cookie


@dataclass(frozen=True)
class Device:
    """A visitor of the person, for the span of time it belonged to them (None: unbounded)."""

    visitor_id: str
    since: datetime | None = None
    until: datetime | None = None

    def covers(self, at: datetime) -> bool:
        return (self.since is None or at >= self.since) and (self.until is None or at < self.until)


@dataclass(frozen=True)
class Touch:
    """One device's first and last touch (landing URL, referrer, UTM), for reports."""

    visitor_id: str
    first_seen_at: datetime
    first_touch: Mapping[str, Any]
    last_touch: Mapping[str, Any]


def devices_of(conn: Connection, *, visitor_id: str | None, user_id: str | None) -> list[Device]:
    """The event's own visitor (whole) and the user's visitors (each for its span)."""
    found = [Device(visitor_id)] if visitor_id else []
    if not user_id:
        return found
    theirs = sa.select(visitor_users.c.visitor_id).where(visitor_users.c.user_id == user_id)
    history = conn.execute(
        sa.select(visitor_users)
        .where(visitor_users.c.visitor_id.in_(theirs))
        .order_by(visitor_users.c.visitor_id, visitor_users.c.linked_at, visitor_users.c.id)
    ).all()
    seen: set[str] = set()
    for row in history:
        first = row.visitor_id not in seen
        seen.add(row.visitor_id)
        if row.user_id == user_id and row.visitor_id != visitor_id:
            since = None if first else row.linked_at
            found.append(Device(row.visitor_id, since, row.unlinked_at))
    # Visitors linked without a history row (older data) count whole.
    current = conn.execute(sa.select(visitors.c.id).where(visitors.c.user_id == user_id))
    found.extend(Device(v) for v in current.scalars() if v not in seen and v != visitor_id)
    return found


def visitor_ids_of(conn: Connection, *, visitor_id: str | None, user_id: str | None) -> list[str]:
    """The visitor itself plus every visitor ever linked to the same user."""
    return sorted({d.visitor_id for d in devices_of(conn, visitor_id=visitor_id, user_id=user_id)})


def window_of(kind: str) -> timedelta:
    """How long a click id of this kind stays usable."""
    return CLICK_WINDOWS.get(kind, DEFAULT_WINDOW)


def click_ids_for(
    conn: Connection,
    *,
    visitor_id: str | None,
    user_id: str | None,
    at: datetime | None = None,
) -> list[ClickId]:
    """Click ids of all the person's devices, oldest first; with `at`, only those in window."""
    devices = devices_of(conn, visitor_id=visitor_id, user_id=user_id)
    if not devices:
        return []
    rows = conn.execute(
        sa.select(
            click_ids.c.visitor_id, click_ids.c.kind, click_ids.c.value, click_ids.c.first_seen_at
        ).where(click_ids.c.visitor_id.in_({d.visitor_id for d in devices}))
    )
    kept: dict[tuple[str, str], ClickId] = {}
    for row in rows:
        if not _on_device(devices, row.visitor_id, row.first_seen_at):
            continue
        if at is not None and not _in_window(row.kind, row.first_seen_at, at):
            continue
        previous = kept.get((row.kind, row.value))
        # The same click id seen on two devices is one click: keep it once, when first seen.
        if previous is None or row.first_seen_at < previous.first_seen_at:
            kept[(row.kind, row.value)] = ClickId(row.kind, row.value, row.first_seen_at)
    return sorted(kept.values(), key=lambda c: (c.first_seen_at, c.kind, c.value))


def context_for(
    conn: Connection,
    *,
    visitor_id: str | None,
    user_id: str | None,
    at: datetime | None = None,
) -> dict[str, str]:
    """The latest known fbp/fbc/ttp/ga/gcl_aw across the person's devices (own device first)."""
    devices = devices_of(conn, visitor_id=visitor_id, user_id=user_id)
    if not devices:
        return {}
    query = sa.select(events.c.visitor_id, events.c.occurred_at, events.c.context).where(
        events.c.visitor_id.in_({d.visitor_id for d in devices})
    )
    if at is not None:
        query = query.where(
            events.c.occurred_at <= at + CLOCK_SKEW, events.c.occurred_at >= at - CONTEXT_LOOKBACK
        )
    rows = conn.execute(query.order_by(events.c.occurred_at.desc()).limit(CONTEXT_ROWS))
    own: dict[str, str] = {}
    others: dict[str, str] = {}
    for row in rows:
        if not _on_device(devices, row.visitor_id, row.occurred_at):
            continue
        target = own if row.visitor_id == visitor_id else others
        context = row.context if isinstance(row.context, dict) else {}
        for key in PIXEL_KEYS:
            value = context.get(key)
            if isinstance(value, str) and value and key not in target:
                target[key] = value
    return {**others, **own}


def touches_for(conn: Connection, *, visitor_id: str | None, user_id: str | None) -> list[Touch]:
    """First and last touch of each of the person's devices, earliest device first."""
    ids = visitor_ids_of(conn, visitor_id=visitor_id, user_id=user_id)
    if not ids:
        return []
    rows = conn.execute(
        sa.select(visitors).where(visitors.c.id.in_(ids)).order_by(visitors.c.first_seen_at)
    )
    return [
        Touch(r.id, r.first_seen_at, _mapping(r.first_touch), _mapping(r.last_touch)) for r in rows
    ]


def _on_device(devices: list[Device], visitor_id: str, at: datetime) -> bool:
    return any(d.visitor_id == visitor_id and d.covers(at) for d in devices)


def _in_window(kind: str, first_seen_at: datetime, at: datetime) -> bool:
    return first_seen_at <= at + CLOCK_SKEW and at - first_seen_at <= window_of(kind)


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}
