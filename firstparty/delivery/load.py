"""Turn stored event rows into the `Event` objects adapters see."""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from firstparty.event import ClickId, Event
from firstparty.identity import attribution, users
from firstparty.settings import Settings
from firstparty.store import db
from firstparty.store.models import UTCDateTime, events, sources

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
    wanted = sorted(pks)
    rows: Any
    if conn.dialect.name == "sqlite":
        rows = _sqlite_rows(conn, wanted)
    else:
        rows = conn.execute(sa.select(*_COLUMNS).where(events.c.id.in_(wanted))).all()
    return _with_people(conn, rows, kinds)


# The columns `to_event` and `_with_people` read: not `response`, JSON decoded for nothing.
_COLUMNS = [c for c in events.c if c.name != "response"]
_SqliteRow = namedtuple("_SqliteRow", [c.name for c in _COLUMNS])  # type: ignore[misc]


def _sqlite_rows(conn: Connection, pks: list[str]) -> list[Any]:
    """The rows as SQLAlchemy reads them on SQLite, without its per-value processing.

    Each value is converted as the column type does it: UTC datetimes from SQLAlchemy's text
    format (`datetime.fromisoformat`), JSON with the engine's decoder; rows answer by attribute.
    """
    names = ", ".join(f'"{c.name}"' for c in _COLUMNS)
    sql = f"SELECT {names} FROM events WHERE events.id IN ({', '.join('?' for _ in pks)})"
    convert = _sqlite_converters()
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql, pks)
        fetched = cursor.fetchall()
    finally:
        cursor.close()
    return [
        _SqliteRow._make([fn(v) if fn else v for fn, v in zip(convert, row, strict=True)])
        for row in fetched
    ]


def _sqlite_converters() -> list[Callable[[Any], Any] | None]:
    converters: list[Callable[[Any], Any] | None] = []
    for column in _COLUMNS:
        if isinstance(column.type, UTCDateTime):
            converters.append(_sqlite_datetime)
        elif isinstance(column.type, sa.JSON):
            converters.append(_sqlite_json)
        else:
            converters.append(None)
    return converters


def _sqlite_datetime(value: Any) -> Any:
    if value is None or not isinstance(value, str):
        return value
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


def _sqlite_json(value: Any) -> Any:
    return db.json_loads(value) if isinstance(value, str | bytes) else value


def _with_people(
    conn: Connection, rows: Sequence[Row[Any]], kinds: Mapping[str, SourceKind]
) -> dict[str, Event]:
    """The events with what each person's devices add: click ids, pixel cookies, phone hashes.

    One read per table for the whole batch (device graph, click ids, events, users).
    """
    people = [attribution.Who(r.visitor_id, r.user_id, r.occurred_at, r.id) for r in rows]
    devices = attribution.devices_of_each(conn, people=people)
    clicks = attribution.click_ids_of_each(conn, people=people, devices=devices)
    contexts = attribution.context_of_each(conn, people=people, devices=devices)
    phones = users.phone_hashes_of(conn, user_ids={r.user_id for r in rows if _shares_phone(r)})
    return {
        row.id: to_event(
            row,
            kinds.get(row.source, "server"),
            found,
            # The event's own values win over those gathered from the person's devices.
            context={**context, **_strings(row.context)},
            user=_user(row, phones),
        )
        for row, found, context in zip(rows, clicks, contexts, strict=True)
    }


def _user(row: Row[Any], phones: Mapping[str, dict[str, str]]) -> dict[str, str]:
    """The event's hashed identifiers, over the user's phone hashes when it may share them."""
    own = _strings(row.user)
    return {**phones.get(row.user_id, {}), **own} if _shares_phone(row) else own


def _shares_phone(row: Row[Any]) -> bool:
    """Whether the user's phone hashes go with this event (consent: ad_user_data not denied)."""
    return bool(row.user_id) and _strings(row.consent).get("ad_user_data") != "denied"


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
        bot=row.bot,
    )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _strings(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, str)}
