"""Hourly event counts kept beside the events, so reports never scan the events table.

One row per UTC hour of `occurred_at` (its start: reports sum the hours of a local day, see
`reports.period`) and key: source, event name, robot or person, converted and the visitor's
first touch (utm_source, utm_medium, utm_campaign and the kinds of click id). Converted is
`events.converted`, decided at ingest: a destination that took the event maps it to one of its
conversions (`DestinationSettings.is_conversion`). Events stored before migration 0012 have
none; they count as converted when they have outbox rows and their name is a conversion kind
(`platforms.legacy_conversion_names`), the rule the migration counted them by.

The writer adds a batch's counts in the batch's own transaction (`add`), so a count is exact
the moment its events are; a privacy erase takes the person's events (and outbox rows) off
(`take`) before deleting them. Retention pruning keeps the counts: they are aggregates without
personal data, the history of traffic.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import astuple, dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection

from firstparty import platforms
from firstparty.delivery import failures, tally
from firstparty.store import shards
from firstparty.store.models import deliveries, event_rollups, events, visitors

CHUNK = 500


@dataclass(frozen=True, order=True)
class Key:
    hour: datetime
    source: str
    name: str
    bot: bool
    converted: bool
    utm_source: str = ""
    utm_medium: str = ""
    utm_campaign: str = ""
    click_kinds: str = ""  # the first touch's click id kinds, in CLICK_IDS order

    @property
    def digest(self) -> str:
        parts = [str(part) for part in astuple(self)[1:]]
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def add(conn: Connection, pks: Collection[str]) -> None:
    """Count these stored events (just written, outbox rows included) in their transaction."""
    _shift(conn, pks, 1)


def take(conn: Connection, pks: Collection[str]) -> None:
    """Uncount these events and their outbox rows (about to be deleted, all still there)."""
    _shift(conn, pks, -1)
    tally.take(conn, pks)
    failures.take(conn, pks)


def backfill(conn: Connection) -> None:
    """Count every stored event (the migration, on an existing database), in id order."""
    after = ""
    while True:
        ids = list(
            conn.execute(
                sa.select(events.c.id).where(events.c.id > after).order_by(events.c.id).limit(5000)
            ).scalars()
        )
        if not ids:
            return
        add(conn, ids)
        after = ids[-1]


def _shift(conn: Connection, pks: Collection[str], sign: int) -> None:
    counts: Counter[Key] = Counter()
    for chunk in _chunks(sorted(pks)):
        counts.update(_keys(conn, chunk))
    _upsert(conn, {key: sign * n for key, n in counts.items()})


def _chunks(values: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]


def converted_column() -> sa.ColumnElement[bool]:
    """Whether an event counts as converted: `events.converted`, else the legacy rule."""
    legacy = sa.and_(
        events.c.name.in_(sorted(platforms.legacy_conversion_names())),
        sa.exists().where(deliveries.c.event_pk == events.c.id),
    )
    return sa.case((events.c.converted.is_(None), legacy), else_=events.c.converted)


def hour(moment: datetime) -> datetime:
    """The UTC hour a moment counts in (its start)."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _keys(conn: Connection, pks: Sequence[str]) -> Iterable[Key]:
    converted = converted_column()
    query = (
        sa.select(
            events.c.occurred_at,
            events.c.source,
            events.c.name,
            events.c.bot,
            converted.label("converted"),
            visitors.c.first_touch,
        )
        .select_from(events.outerjoin(visitors, visitors.c.id == events.c.visitor_id))
        .where(events.c.id.in_(pks))
    )
    for row in conn.execute(query):
        yield _key(
            row.occurred_at, row.source, row.name, row.bot, bool(row.converted), row.first_touch
        )


def _key(
    occurred_at: datetime,
    source: str,
    name: str,
    bot: str | None,
    converted: bool,
    first_touch: dict[str, Any] | None,
) -> Key:
    touch = first_touch or {}
    utm = touch.get("utm") or {}
    clicks = touch.get("click_ids") or {}
    kinds = ",".join(k for k in platforms.CLICK_IDS if clicks.get(k) is not None)
    return Key(
        hour(occurred_at),
        source,
        name,
        bot is not None,
        converted,
        _text(utm.get("utm_source")),
        _text(utm.get("utm_medium")),
        _text(utm.get("utm_campaign")),
        kinds,
    )


def _text(value: object) -> str:
    return "" if value is None else str(value)[:255]


def _upsert(conn: Connection, deltas: dict[Key, int]) -> None:
    """One row per key, added to; sorted, so concurrent writers lock rows in the same order."""
    shard = shards.of(conn)
    rows = [_row(key, n) | {"shard": shard} for key, n in sorted(deltas.items()) if n]
    if not rows:
        return
    table = event_rollups
    name = conn.dialect.name
    stmt: Any
    if name in ("postgresql", "sqlite"):
        insert = postgresql.insert if name == "postgresql" else sqlite.insert
        base = insert(table)
        stmt = base.on_conflict_do_update(
            index_elements=[table.c.hour, table.c.key, table.c.shard],
            set_={"count": table.c.count + base.excluded["count"]},
        )
    else:
        base_my = mysql.insert(table)
        stmt = base_my.on_duplicate_key_update(count=table.c.count + base_my.inserted["count"])
    conn.execute(stmt, rows)


def _row(key: Key, n: int) -> dict[str, Any]:
    return {
        "hour": key.hour,
        "key": key.digest,
        "source": key.source,
        "name": key.name,
        "bot": key.bot,
        "converted": key.converted,
        "utm_source": key.utm_source,
        "utm_medium": key.utm_medium,
        "utm_campaign": key.utm_campaign,
        "click_kinds": key.click_kinds,
        "count": n,
    }
