"""Turn stored event rows into the `Event` objects adapters see."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from firstparty.destinations.base import ClickId, Event
from firstparty.identity import attribution
from firstparty.settings import Settings
from firstparty.store.models import events, sources

SourceKind = Literal["browser", "server"]


def source_kinds(conn: Connection, settings: Settings) -> dict[str, SourceKind]:
    """Kind of every known source: those created by CLI, overridden by the config file."""
    kinds: dict[str, SourceKind] = {}
    for row in conn.execute(sa.select(sources.c.name, sources.c.kind)):
        kinds[row.name] = "browser" if row.kind == "browser" else "server"
    kinds.update({s.name: s.kind for s in settings.sources})
    return kinds


def load_events(
    conn: Connection, pks: Collection[str], *, kinds: Mapping[str, SourceKind]
) -> dict[str, Event]:
    """The events with these row ids, each with the click ids of all the person's devices."""
    if not pks:
        return {}
    rows = conn.execute(sa.select(events).where(events.c.id.in_(sorted(pks)))).all()
    # Many events in a batch belong to the same person: look their click ids up once.
    cache: dict[tuple[str | None, str | None], list[ClickId]] = {}
    loaded = {}
    for row in rows:
        person = (row.visitor_id, row.user_id)
        if person not in cache:
            cache[person] = attribution.click_ids_for(
                conn, visitor_id=row.visitor_id, user_id=row.user_id
            )
        loaded[row.id] = to_event(row, kinds.get(row.source, "server"), cache[person])
    return loaded


def to_event(row: Row[Any], kind: SourceKind, click_ids: list[ClickId]) -> Event:
    """One `events` row as an adapter's `Event`."""
    request = row.request if isinstance(row.request, dict) else {}
    properties = request.get("properties")
    return Event(
        pk=row.id,
        event_id=row.event_id,
        type=row.type,
        name=row.name,
        source=row.source,
        source_kind=kind,
        occurred_at=row.occurred_at,
        received_at=row.received_at,
        url=_text(request.get("url")),
        referrer=_text(request.get("referrer")),
        title=_text(request.get("title")),
        properties=properties if isinstance(properties, dict) else {},
        user=_strings(row.user),
        context=_strings(row.context),
        consent=_strings(row.consent),
        visitor_id=row.visitor_id,
        user_id=row.user_id,
        click_ids=tuple(click_ids),
    )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _strings(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, str)}
