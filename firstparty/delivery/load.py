"""Turn stored event rows into the `Event` objects adapters see."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from firstparty.destinations.base import ClickId, Event
from firstparty.identity import attribution, users
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
    return {row.id: _with_person(conn, row, kinds.get(row.source, "server")) for row in rows}


def _with_person(conn: Connection, row: Row[Any], kind: SourceKind) -> Event:
    """The event with what the person's devices add: click ids, pixel cookies, phone hashes."""
    if row.visitor_id is None and row.user_id is None:
        return to_event(row, kind, [])
    who = {"visitor_id": row.visitor_id, "user_id": row.user_id, "at": row.occurred_at}
    clicks = attribution.click_ids_for(conn, **who)
    # The event's own values win over those gathered from the person's devices.
    context = {**attribution.context_for(conn, **who), **_strings(row.context)}
    user = _strings(row.user)
    if row.user_id and _strings(row.consent).get("ad_user_data") != "denied":
        user = {**users.phone_hashes_for(conn, row.user_id), **user}
    return to_event(row, kind, clicks, context=context, user=user)


def to_event(
    row: Row[Any],
    kind: SourceKind,
    click_ids: list[ClickId],
    *,
    context: dict[str, str] | None = None,
    user: dict[str, str] | None = None,
) -> Event:
    """One `events` row as an adapter's `Event`."""
    request = row.request if isinstance(row.request, dict) else {}
    properties = request.get("properties")
    context = _strings(row.context) if context is None else context
    return Event(
        pk=row.id,
        event_id=row.event_id,
        type=row.type,
        name=row.name,
        source=row.source,
        source_kind=kind,
        occurred_at=row.occurred_at,
        received_at=row.received_at,
        url=_text(request.get("url")) or context.get("page_url"),
        referrer=_text(request.get("referrer")),
        title=_text(request.get("title")),
        properties=properties if isinstance(properties, dict) else {},
        user=_strings(row.user) if user is None else user,
        context=context,
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
