"""What travels with a conversion: click ids and pixel cookies from all of the person's devices.

The devices of an event are its own visitor plus, when the person is known (`user_id`), every
visitor linked to that user, each for the span of time it belonged to them: a visitor that moved
to another user keeps its earlier clicks with the user it had then (its first span starts at its
first visit, so the ad click that preceded the first verification counts). The event's own
visitor always counts whole, as the platform's browser pixel would see it.

Rule for click ids: every click id seen on those devices, and the event's own (a server source's
click ids captured by a CRM, `Who.event_pk`), first seen no later than the conversion and within
its platform's window (`platforms.window_of`), is handed to the adapter sorted oldest first; the
adapter takes the most recent of each kind (`Event.click_id`). First touch stays on
the visitor row for reports (`touches_for`).

Rule for pixel cookies (`context_for`): the latest known value of each of
`platforms.PIXEL_FIELDS` from the devices' events; the event's own visitor wins over other
devices, and the event's own context wins over both (the worker merges it last).

Each rule has a batch form (`devices_of_each`, `click_ids_of_each`, `context_of_each`) that
serves many events from one read of each table; the one-person functions are that with one.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from firstparty import platforms
from firstparty.event import ClickId
from firstparty.store.models import click_ids, events, visitor_users, visitors

# Browser clocks may run ahead of the server's: a click seen just after the event still counts.
CLOCK_SKEW = timedelta(minutes=10)
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
class Who:
    """Whose devices to gather (an event's visitor and user), and as of when (None: any time).

    `event_pk`: the event itself, whose own click ids (a server source's, stored for the event
    when it has no visitor) count beside those of the devices.
    """

    visitor_id: str | None
    user_id: str | None
    at: datetime | None = None
    event_pk: str | None = None


@dataclass(frozen=True)
class Touch:
    """One device's first and last touch (landing URL, referrer, UTM), for reports."""

    visitor_id: str
    first_seen_at: datetime
    first_touch: Mapping[str, Any]
    last_touch: Mapping[str, Any]


class _Seen(NamedTuple):
    """One event of a device, reduced to what `context_of_each` reads."""

    visitor_id: str
    occurred_at: datetime
    pixels: dict[str, str]


# Longest IN list sent in one statement (SQLite takes 32,766 parameters, the others 65,535).
IN_LIST = 5000


def devices_of(conn: Connection, *, visitor_id: str | None, user_id: str | None) -> list[Device]:
    """The event's own visitor (whole) and the user's visitors (each for its span)."""
    return devices_of_each(conn, people=[Who(visitor_id, user_id)])[0]


def devices_of_each(conn: Connection, *, people: Sequence[Who]) -> list[list[Device]]:
    """`devices_of` for each of these people, reading the device graph once for them all."""
    spans = _users_devices(conn, {p.user_id for p in people if p.user_id})
    return [_devices(who, spans) for who in people]


def visitor_ids_of(conn: Connection, *, visitor_id: str | None, user_id: str | None) -> list[str]:
    """The visitor itself plus every visitor ever linked to the same user."""
    return sorted({d.visitor_id for d in devices_of(conn, visitor_id=visitor_id, user_id=user_id)})


def click_ids_for(
    conn: Connection,
    *,
    visitor_id: str | None,
    user_id: str | None,
    at: datetime | None = None,
) -> list[ClickId]:
    """Click ids of all the person's devices, oldest first; with `at`, only those in window."""
    people = [Who(visitor_id, user_id, at)]
    return click_ids_of_each(conn, people=people, devices=devices_of_each(conn, people=people))[0]


def click_ids_of_each(
    conn: Connection, *, people: Sequence[Who], devices: Sequence[list[Device]]
) -> list[list[ClickId]]:
    """`click_ids_for` each person, given their `devices_of_each`, in one read of the click ids."""
    seen: dict[str, list[ClickId]] = defaultdict(list)
    columns = (click_ids.c.kind, click_ids.c.value, click_ids.c.first_seen_at)
    for chunk in _chunks({d.visitor_id for found in devices for d in found}):
        query = sa.select(click_ids.c.visitor_id, *columns)
        for row in conn.execute(query.where(click_ids.c.visitor_id.in_(chunk))):
            seen[row.visitor_id].append(ClickId(row.kind, row.value, row.first_seen_at))
    own: dict[str, list[ClickId]] = defaultdict(list)
    for chunk in _chunks({p.event_pk for p in people if p.event_pk}):
        query = sa.select(click_ids.c.event_pk, *columns)
        for row in conn.execute(query.where(click_ids.c.event_pk.in_(chunk))):
            own[row.event_pk].append(ClickId(row.kind, row.value, row.first_seen_at))
    return [
        _clicks(who, found, seen, own.get(who.event_pk or "", []))
        for who, found in zip(people, devices, strict=True)
    ]


def context_for(
    conn: Connection,
    *,
    visitor_id: str | None,
    user_id: str | None,
    at: datetime | None = None,
) -> dict[str, str]:
    """The latest known fbp/fbc/ttp/ga/gcl_aw across the person's devices (own device first)."""
    people = [Who(visitor_id, user_id, at)]
    return context_of_each(conn, people=people, devices=devices_of_each(conn, people=people))[0]


def context_of_each(
    conn: Connection, *, people: Sequence[Who], devices: Sequence[list[Device]]
) -> list[dict[str, str]]:
    """`context_for` each person, given their `devices_of_each`, in one read of their events."""
    seen: dict[str, list[_Seen]] = defaultdict(list)
    span = _lookback(people)
    for chunk in _chunks({d.visitor_id for found in devices for d in found}):
        query = sa.select(events.c.visitor_id, events.c.occurred_at, events.c.context).where(
            events.c.visitor_id.in_(chunk)
        )
        if span is not None:
            query = query.where(events.c.occurred_at.between(*span))
        for row in conn.execute(query):
            seen[row.visitor_id].append(
                _Seen(row.visitor_id, row.occurred_at, _pixels(row.context))
            )
    for rows in seen.values():
        rows.sort(key=_occurred_at)
    return [_context(who, found, seen) for who, found in zip(people, devices, strict=True)]


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


def _users_devices(conn: Connection, user_ids: set[str]) -> dict[str, list[Device]]:
    """Each user's visitors, each for the spans it belonged to them.

    A visitor's first span starts unbounded (its clicks before the first verification count);
    visitors linked without a history row (older data) count whole.
    """
    if not user_ids:
        return {}
    found: dict[str, list[Device]] = {u: [] for u in user_ids}
    linked: set[tuple[str, str]] = set()
    for visitor_id, history in sorted(_histories(conn, user_ids).items()):
        for index, row in enumerate(history):
            if row.user_id in found:
                since = None if index == 0 else row.linked_at
                found[row.user_id].append(Device(visitor_id, since, row.unlinked_at))
                linked.add((row.user_id, visitor_id))
    for chunk in _chunks(user_ids):
        current = sa.select(visitors.c.id, visitors.c.user_id).where(visitors.c.user_id.in_(chunk))
        for visitor in conn.execute(current):
            if visitor.user_id in found and (visitor.user_id, visitor.id) not in linked:
                found[visitor.user_id].append(Device(visitor.id))
    return found


def _histories(conn: Connection, user_ids: set[str]) -> dict[str, list[Row[Any]]]:
    """Every link, to any user, of each visitor ever linked to these users; oldest first."""
    links: dict[int, Row[Any]] = {}
    for chunk in _chunks(user_ids):
        theirs = sa.select(visitor_users.c.visitor_id).where(visitor_users.c.user_id.in_(chunk))
        query = sa.select(visitor_users).where(visitor_users.c.visitor_id.in_(theirs))
        links.update((row.id, row) for row in conn.execute(query))
    history: dict[str, list[Row[Any]]] = defaultdict(list)
    for row in sorted(links.values(), key=lambda r: (r.linked_at, r.id)):
        history[row.visitor_id].append(row)
    return history


def _devices(who: Who, spans: Mapping[str, list[Device]]) -> list[Device]:
    own = [Device(who.visitor_id)] if who.visitor_id else []
    theirs = spans.get(who.user_id, []) if who.user_id else []
    return own + [d for d in theirs if d.visitor_id != who.visitor_id]


def _clicks(
    who: Who,
    devices: list[Device],
    seen: Mapping[str, list[ClickId]],
    own: list[ClickId],
) -> list[ClickId]:
    """The devices' click ids (each in its span) and the event's own, in window, oldest first."""
    found = [
        click
        for visitor_id in {d.visitor_id for d in devices}
        for click in seen.get(visitor_id, [])
        if _on_device(devices, visitor_id, click.first_seen_at)
    ]
    kept: dict[tuple[str, str], ClickId] = {}
    for click in found + own:
        if who.at is not None and not _in_window(click.kind, click.first_seen_at, who.at):
            continue
        previous = kept.get((click.kind, click.value))
        # The same click id seen on two devices is one click: keep it once, when first seen.
        if previous is None or click.first_seen_at < previous.first_seen_at:
            kept[(click.kind, click.value)] = click
    return sorted(kept.values(), key=lambda c: (c.first_seen_at, c.kind, c.value))


def _context(who: Who, devices: list[Device], seen: Mapping[str, list[_Seen]]) -> dict[str, str]:
    newest = heapq.merge(
        *(_newest(seen.get(v, []), who.at) for v in {d.visitor_id for d in devices}),
        key=_occurred_at,
        reverse=True,
    )
    own: dict[str, str] = {}
    others: dict[str, str] = {}
    for row in itertools.islice(newest, CONTEXT_ROWS):
        if not _on_device(devices, row.visitor_id, row.occurred_at):
            continue
        target = own if row.visitor_id == who.visitor_id else others
        for key, value in row.pixels.items():
            target.setdefault(key, value)
    return {**others, **own}


def _newest(rows: list[_Seen], at: datetime | None) -> list[_Seen]:
    """Of a device's events (oldest first), the newest `CONTEXT_ROWS` in the lookback of `at`."""
    start, stop = 0, len(rows)
    if at is not None:
        start = bisect.bisect_left(rows, at - CONTEXT_LOOKBACK, key=_occurred_at)
        stop = bisect.bisect_right(rows, at + CLOCK_SKEW, key=_occurred_at)
    return rows[max(start, stop - CONTEXT_ROWS) : stop][::-1]


def _lookback(people: Sequence[Who]) -> tuple[datetime, datetime] | None:
    """The time span holding every person's lookback (None: someone is looked at any time)."""
    times = [p.at for p in people if p.at is not None]
    if not times or len(times) < len(people):
        return None
    return min(times) - CONTEXT_LOOKBACK, max(times) + CLOCK_SKEW


def _pixels(context: object) -> dict[str, str]:
    found = context if isinstance(context, dict) else {}
    return {k: v for k in platforms.PIXEL_FIELDS if isinstance(v := found.get(k), str) and v}


def _occurred_at(row: _Seen) -> datetime:
    return row.occurred_at


def _chunks(values: set[str]) -> Iterator[list[str]]:
    ordered = sorted(values)
    for start in range(0, len(ordered), IN_LIST):
        yield ordered[start : start + IN_LIST]


def _on_device(devices: list[Device], visitor_id: str, at: datetime) -> bool:
    return any(d.visitor_id == visitor_id and d.covers(at) for d in devices)


def _in_window(kind: str, first_seen_at: datetime, at: datetime) -> bool:
    return first_seen_at <= at + CLOCK_SKEW and at - first_seen_at <= platforms.window_of(kind)


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}
