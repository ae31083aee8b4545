"""The live debugger's reads: events as they arrive, and what became of their deliveries.

A `Watch` is one viewer's position: each `poll` returns the events received since the last one
(read with a few seconds of overlap, since events committed by another process can arrive a
little out of order, and deduplicated by id) and the current state of the deliveries of the
events it showed recently, each with the platform's latest answer. Everything comes from the
database, so a viewer sees the events of every server process. A watch may be narrowed by
`Filters` (source, event name, type), applied in the query on indexed columns.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from firstparty.store import models as m

OVERLAP = timedelta(seconds=5)  # re-read this far back: late commits of other processes
FOLLOW = timedelta(minutes=5)  # keep reporting the deliveries of events this recent
MAX_EVENTS = 100  # per poll
MAX_FOLLOWED = 200
ANSWER_CHARS = 500  # of the platform's answer body
TYPES = ("track", "page", "identify")  # the types events are stored with


@dataclass(frozen=True)
class Filters:
    """What a viewer follows: None is any."""

    source: str | None = None
    name: str | None = None
    type: str | None = None


@dataclass
class Watch:
    """One viewer: from when it reads, and the events it has shown (id -> received time)."""

    since: datetime
    shown: OrderedDict[str, datetime] = field(default_factory=OrderedDict)
    filters: Filters = Filters()

    @classmethod
    def starting(
        cls,
        now: datetime,
        *,
        back: timedelta = timedelta(minutes=2),
        filters: Filters = Filters(),
    ) -> Watch:
        return cls(since=now - back, filters=filters)


def poll(
    engine: Engine, watch: Watch, now: datetime
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(new events, deliveries of the events shown lately), oldest first."""
    with engine.connect() as conn:
        fresh = _new_events(conn, watch)
        watch.since = max([watch.since, *(e["received"] for e in fresh)])
        for item in fresh:
            watch.shown[item["id"]] = item.pop("received")
        _forget(watch, now)
        deliveries = _deliveries(conn, list(watch.shown))
    return fresh, deliveries


def _new_events(conn: Connection, watch: Watch) -> list[dict[str, Any]]:
    e, wanted = m.events, watch.filters
    # The window is minutes: read on the received_at indexes, (source, received_at) for a source.
    # The name is compared through coalesce so that no engine reads its (name, id) index, which
    # holds every event of that name ever (SQLite chose it without statistics: a full sort).
    narrow = [
        column == value
        for column, value in (
            (e.c.source, wanted.source),
            (sa.func.coalesce(e.c.name, ""), wanted.name),
            (e.c.type, wanted.type),
        )
        if value is not None
    ]
    rows = conn.execute(
        sa.select(
            e.c.id,
            e.c.received_at,
            e.c.source,
            e.c.type,
            e.c.name,
            e.c.event_id,
            e.c.visitor_id,
            e.c.user_id,
            e.c.response,
            e.c.bot,
        )
        .where(e.c.received_at >= watch.since - OVERLAP, *narrow)
        .order_by(e.c.received_at, e.c.id)
        .limit(MAX_EVENTS + len(watch.shown))
    ).mappings()
    found = [_event(r) for r in rows if r["id"] not in watch.shown]
    return found[:MAX_EVENTS]


def _event(row: sa.RowMapping) -> dict[str, Any]:
    response = row["response"] if isinstance(row["response"], dict) else {}
    return {
        "id": row["id"],
        "received": row["received_at"],
        "received_at": row["received_at"].isoformat(),
        "source": row["source"],
        "type": row["type"],
        "name": row["name"],
        "event_id": row["event_id"],
        "visitor_id": row["visitor_id"],
        "user_id": row["user_id"],
        "bot": row["bot"],
        "warnings": response.get("warnings") or [],
    }


def _forget(watch: Watch, now: datetime) -> None:
    while watch.shown and (
        len(watch.shown) > MAX_FOLLOWED or next(iter(watch.shown.values())) < now - FOLLOW
    ):
        watch.shown.popitem(last=False)


def _deliveries(conn: Connection, event_pks: list[str]) -> list[dict[str, Any]]:
    if not event_pks:
        return []
    d, te, t = m.deliveries, m.track_events, m.tracks
    latest = (
        sa.select(te.c.delivery_id, sa.func.max(te.c.track_id).label("track_id"))
        .where(te.c.event_pk.in_(event_pks))
        .group_by(te.c.delivery_id)
        .subquery()
    )
    rows = conn.execute(
        sa.select(
            d.c.id,
            d.c.event_pk,
            d.c.destination,
            d.c.status,
            d.c.attempts,
            d.c.last_error,
            t.c.response_status,
            t.c.response_body,
            t.c.error,
        )
        .select_from(
            d.outerjoin(latest, latest.c.delivery_id == d.c.id).outerjoin(
                t, t.c.id == latest.c.track_id
            )
        )
        .where(d.c.event_pk.in_(event_pks))
        .order_by(d.c.id)
    ).mappings()
    return [_delivery(r) for r in rows]


def _delivery(row: sa.RowMapping) -> dict[str, Any]:
    body = row["response_body"]
    return {
        "id": row["id"],
        "event": row["event_pk"],
        "destination": row["destination"],
        "status": row["status"],
        "attempts": row["attempts"],
        "error": row["last_error"] or row["error"],
        "answer_status": row["response_status"],
        "answer": body[:ANSWER_CHARS] if body else None,
    }


def utcnow() -> datetime:
    return datetime.now(UTC)
