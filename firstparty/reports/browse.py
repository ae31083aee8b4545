"""Reading events and outgoing requests back, page by page (the admin API and UI)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine, RowMapping

from firstparty.delivery import track
from firstparty.delivery.outbox import DeliveryStatus
from firstparty.store import models as m
from firstparty.store import partitions

# The statuses a logged request can have: those of the work it carried, less `inflight`.
TRACK_STATUSES = tuple(s.value for s in DeliveryStatus if s != DeliveryStatus.INFLIGHT)


@dataclass(frozen=True)
class EventFilters:
    name: str | None = None
    source: str | None = None
    event_id: str | None = None
    visitor_id: str | None = None
    user_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    cursor: str | None = None


@dataclass(frozen=True)
class TrackFilters:
    status: str | None = None
    destination: str | None = None
    event_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    cursor: str | None = None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _event_item(row: RowMapping) -> dict[str, Any]:
    return {
        "id": row["id"],
        "event_id": row["event_id"],
        "type": row["type"],
        "name": row["name"],
        "source": row["source"],
        "occurred_at": _iso(row["occurred_at"]),
        "received_at": _iso(row["received_at"]),
        "visitor_id": row["visitor_id"],
        "user_id": row["user_id"],
        "bot": row["bot"],  # why it looks automated (crawler, headless...); None: a person
        "cursor": row["id"],
    }


def events(engine: Engine, f: EventFilters, limit: int) -> list[dict[str, Any]]:
    """Newest first; the cursor is the last id of the previous page (ids sort by time)."""
    query = sa.select(m.events).order_by(m.events.c.id.desc()).limit(limit)
    for column, value in (
        (m.events.c.name, f.name),
        (m.events.c.source, f.source),
        (m.events.c.visitor_id, f.visitor_id),
        (m.events.c.user_id, f.user_id),
    ):
        if value is not None:
            query = query.where(column == value)
    if f.since:
        query = query.where(m.events.c.occurred_at >= f.since)
    if f.until:
        query = query.where(m.events.c.occurred_at < f.until)
    if f.cursor:
        query = query.where(m.events.c.id < f.cursor)
    with engine.connect() as conn:
        if f.event_id is not None:
            query = query.where(m.events.c.id.in_(_event_pks(conn, f.event_id)))
        return [_event_item(r) for r in conn.execute(query).mappings()]


def _event_pks(conn: sa.Connection, event_id: str) -> list[str]:
    """The rows of the events with this event id (one per source that sent it), found on the
    one index over event ids: `events`' unique (event_id, source), or where `events` is
    partitioned (PostgreSQL) `event_keys`' primary key (0025_event_id_key)."""
    if partitions.partitioned(conn.dialect):
        query = sa.select(m.event_keys.c.event_pk).where(m.event_keys.c.event_id == event_id)
    else:
        query = sa.select(m.events.c.id).where(m.events.c.event_id == event_id)
    return list(conn.execute(query).scalars())


def event(engine: Engine, pk: str) -> dict[str, Any] | None:
    """One event, whole, with its deliveries and the outgoing requests that carried it."""
    with engine.connect() as conn:
        row = conn.execute(sa.select(m.events).where(m.events.c.id == pk)).mappings().first()
        if row is None:
            return None
        work = conn.execute(
            sa.select(m.deliveries).where(m.deliveries.c.event_pk == pk).order_by(m.deliveries.c.id)
        ).mappings()
        sent = conn.execute(
            sa.select(m.tracks, m.track_events.c.outcome, m.track_events.c.reason)
            .join(m.track_events, m.track_events.c.track_id == m.tracks.c.id)
            .where(m.track_events.c.event_pk == pk)
            .order_by(m.tracks.c.id)
        ).mappings()
        item = _event_item(row)
        item.pop("cursor")
        for key in ("request", "response", "user", "context", "consent"):
            item[key] = row[key]
        item["deliveries"] = [
            {
                "destination": d["destination"],
                "status": d["status"],
                "attempts": d["attempts"],
                "next_attempt_at": _iso(d["next_attempt_at"]),
                "last_error": d["last_error"],
            }
            for d in work
        ]
        item["visitor"] = _visitor(conn, row["visitor_id"]) if row["visitor_id"] else None
        item["tracks"] = [
            {**_track_item(t), "outcome": t["outcome"], "reason": t["reason"]} for t in sent
        ]
        return item


def _visitor(conn: sa.Connection, visitor_id: str) -> dict[str, Any] | None:
    """The visitor's first and latest touch and every click id with its first-seen time."""
    row = (
        conn.execute(sa.select(m.visitors).where(m.visitors.c.id == visitor_id)).mappings().first()
    )
    if row is None:
        return None
    clicks = conn.execute(
        sa.select(m.click_ids)
        .where(m.click_ids.c.visitor_id == visitor_id)
        .order_by(m.click_ids.c.id)
    ).mappings()
    return {
        "id": visitor_id,
        "user_id": row["user_id"],
        "first_seen_at": _iso(row["first_seen_at"]),
        "last_seen_at": _iso(row["last_seen_at"]),
        "first_touch": row["first_touch"],
        "last_touch": row["last_touch"],
        "click_ids": [
            {"kind": c["kind"], "value": c["value"], "first_seen_at": _iso(c["first_seen_at"])}
            for c in clicks
        ],
    }


# A list of outgoing requests carries each body of up to this many bytes (as JSON text); a
# longer one (an audience sync's 10,000 members, a platform batch of 1,000 events: hundreds of
# KB) is left out unread, marked truncated, and comes whole from GET /v1/admin/tracks/{id}.
LIST_BODY_BYTES = 16_384
_LONG = m.tracks.c.request_bytes > LIST_BODY_BYTES
# The list's columns: the body only when it is short (or logged before its size was kept).
LIST_COLUMNS = (
    *(c for c in m.tracks.c if c.name != "request"),
    sa.type_coerce(sa.case((_LONG, sa.null()), else_=m.tracks.c.request), m.JSONType).label(
        "request"
    ),
)


def _stored_body(value: Any) -> Any:
    # Logged before bodies were stored alike, a JSON body may still be a string here.
    return track.json_or_text(value) if isinstance(value, str) else value


def _track_item(row: RowMapping) -> dict[str, Any]:
    size = row["request_bytes"]
    return {
        "id": row["id"],
        "destination": row["destination"],
        "status": row["status"],
        "attempt": row["attempt"],
        "method": row["method"],
        "url": row["url"],
        "request": _stored_body(row["request"]),
        "request_bytes": size,
        "request_truncated": size is not None and size > LIST_BODY_BYTES and row["request"] is None,
        "response_status": row["response_status"],
        "response_body": row["response_body"],
        "duration_ms": row["duration_ms"],
        "error": row["error"],
        "created_at": _iso(row["created_at"]),
        "cursor": str(row["id"]),
    }


def _tracks_query(
    f: TrackFilters, limit: int, *columns: Any, event_pks: list[str] | None = None
) -> sa.Select[Any]:
    query = sa.select(*(columns or LIST_COLUMNS)).order_by(m.tracks.c.id.desc()).limit(limit)
    if f.status:
        query = query.where(m.tracks.c.status == f.status)
    if f.destination:
        query = query.where(m.tracks.c.destination == f.destination)
    if f.since:
        query = query.where(m.tracks.c.created_at >= f.since)
    if f.until:
        query = query.where(m.tracks.c.created_at < f.until)
    if f.cursor and f.cursor.isdigit():
        query = query.where(m.tracks.c.id < int(f.cursor))
    if event_pks is not None:  # those of the events with the filter's event id (_event_pks)
        carried = sa.select(m.track_events.c.track_id).where(
            m.track_events.c.event_pk.in_(event_pks)
        )
        query = query.where(m.tracks.c.id.in_(carried))
    return query


def _newest_of_destination(conn: sa.Connection, f: TrackFilters, limit: int) -> sa.Select[Any]:
    """One destination's newest requests of every status: its index (destination, status, id)
    gives id order within one status, so the newest `limit` of each status are read from it
    (ids only) and merged here, instead of sorting every request of the destination."""
    parts = [
        sa.select(_tracks_query(replace(f, status=status), limit, m.tracks.c.id).subquery())
        for status in DeliveryStatus
    ]
    ids = sorted((row[0] for row in conn.execute(sa.union_all(*parts))), reverse=True)[:limit]
    return sa.select(*LIST_COLUMNS).where(m.tracks.c.id.in_(ids)).order_by(m.tracks.c.id.desc())


def tracks(engine: Engine, f: TrackFilters, limit: int) -> list[dict[str, Any]]:
    """Outgoing requests, newest first, each naming the events it carried by event_id."""
    with engine.connect() as conn:
        if f.destination and not f.status and not f.event_id:
            query = _newest_of_destination(conn, f, limit)
        else:
            pks = _event_pks(conn, f.event_id) if f.event_id else None
            query = _tracks_query(f, limit, event_pks=pks)
        items = [_track_item(r) for r in conn.execute(query).mappings()]
        _name_events(conn, items)
    return items


def one_track(engine: Engine, track_id: int) -> dict[str, Any] | None:
    """One outgoing request with its whole body, naming the events it carried."""
    with engine.connect() as conn:
        row = conn.execute(sa.select(m.tracks).where(m.tracks.c.id == track_id)).mappings().first()
        if row is None:
            return None
        item = _track_item(row)
        _name_events(conn, [item])
    item.pop("cursor")
    return item


def _name_events(conn: sa.Connection, items: list[dict[str, Any]]) -> None:
    """Each item's `event_ids`: the events its request carried."""
    names: dict[int, list[str]] = {i["id"]: [] for i in items}
    if names:
        links = conn.execute(
            sa.select(m.track_events.c.track_id, m.events.c.event_id)
            .join(m.events, m.events.c.id == m.track_events.c.event_pk)
            .where(m.track_events.c.track_id.in_(list(names)))
        )
        for link in links:
            names[link.track_id].append(link.event_id)
    for item in items:
        item["event_ids"] = names[item["id"]]
