"""Conversions per hour with their credit, kept beside the events so attribution never scans them.

The writer calls `add` with the events of a batch that are conversions (`events.converted`: a
destination that took the event maps it to one of its conversions, the reports' one
definition; `rollups.converted_column`), in the batch's own transaction, after the visitors'
touches are moved on. A batch with no conversion costs nothing; a batch with some costs three
reads (its converting events; the devices of their people; those devices' click ids) and one
upsert, whatever its size. The credit (`reports.credit`) is fixed as of the conversion: a
visitor linked to the user later, or a touch after, does not move a conversion already counted
— as events are never rewritten. Robots' events are not counted.

A privacy erase leaves these counts as they are (anonymous aggregates, as retention pruning
leaves them): they hold no personal data and no event can be found from them.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import astuple, dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection

from firstparty.collect import amounts
from firstparty.reports import credit, rollups
from firstparty.store import shards
from firstparty.store.models import click_ids, conversion_rollups, events, visitors

CHUNK = 500
MICROS = 1_000_000


@dataclass(frozen=True, order=True)
class Key:
    hour: datetime
    source: str
    name: str
    ft_channel: str
    ft_source: str
    ft_medium: str
    ft_campaign: str
    lt_channel: str
    lt_source: str
    lt_medium: str
    lt_campaign: str
    cross_device: bool
    currency: str
    clicked: str
    recovered: str

    @property
    def digest(self) -> str:
        parts = [str(part) for part in astuple(self)[1:]]
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def add(conn: Connection, pks: Collection[str]) -> None:
    """Count these just-stored events that are conversions (outbox rows written), in their
    transaction."""
    counts: Counter[Key] = Counter()
    values: Counter[Key] = Counter()
    for chunk in _chunks(sorted(pks)):
        for key, micros in _credited(conn, chunk):
            counts[key] += 1
            values[key] += micros
    _upsert(conn, counts, values)


def backfill(conn: Connection) -> None:
    """Count every stored conversion (the migration, on an existing database), in id order."""
    after = ""
    while True:
        query = sa.select(events.c.id).where(events.c.id > after).order_by(events.c.id)
        ids = list(conn.execute(query.limit(5000)).scalars())
        if not ids:
            return
        add(conn, ids)
        after = ids[-1]


def value_of(properties: object) -> tuple[int, str]:
    """(value in millionths, currency) of an event's properties: `value`, else `revenue`;
    (0, "") without a usable value. Numeric strings count ("49.90"), as at the door."""
    found = properties if isinstance(properties, Mapping) else {}
    raw = found.get("value")
    number = amounts.number_of(raw if raw is not None else found.get("revenue"))
    if number is None:
        return 0, ""
    currency = found.get("currency")
    code = currency.strip().upper() if isinstance(currency, str) else ""
    return round(number * MICROS), code if len(code) == 3 and code.isalpha() else ""


def _chunks(values: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]


def _credited(conn: Connection, pks: Sequence[str]) -> Iterator[tuple[Key, int]]:
    converted = rollups.converted_column().is_(True)
    query = sa.select(
        events.c.occurred_at,
        events.c.source,
        events.c.name,
        events.c.visitor_id,
        events.c.user_id,
        events.c.request,
        events.c.context,
    ).where(events.c.id.in_(pks), events.c.bot.is_(None), converted)
    rows = list(conn.execute(query))
    if not rows:
        return
    devices = _devices(conn, rows)
    clicks = _clicks(conn, {d.visitor_id for found in devices.values() for d in found})
    for row in rows:
        theirs = list(devices.get(("v", row.visitor_id), []))
        if row.user_id:
            theirs += [d for d in devices.get(("u", row.user_id), []) if d not in theirs]
        conversion = credit.Conversion(row.occurred_at, row.visitor_id, _mapping(row.context))
        found = credit.credit(conversion, theirs, clicks)
        request = _mapping(row.request)
        micros, currency = value_of(request.get("properties"))
        yield _key(row, found, currency), micros


def _devices(conn: Connection, rows: Sequence[Any]) -> dict[tuple[str, str], list[credit.Device]]:
    """("v", visitor) -> that visitor; ("u", user) -> the user's visitors now; one read."""
    own = {r.visitor_id for r in rows if r.visitor_id}
    people = {r.user_id for r in rows if r.user_id}
    conditions = []
    if own:
        conditions.append(visitors.c.id.in_(sorted(own)))
    if people:
        conditions.append(visitors.c.user_id.in_(sorted(people)))
    found: dict[tuple[str, str], list[credit.Device]] = defaultdict(list)
    if not conditions:
        return found
    query = sa.select(
        visitors.c.id,
        visitors.c.user_id,
        visitors.c.first_seen_at,
        visitors.c.first_touch,
        visitors.c.last_touch,
    ).where(sa.or_(*conditions))
    for v in conn.execute(query):
        device = credit.Device(
            v.id, v.first_seen_at, _mapping(v.first_touch), _mapping(v.last_touch)
        )
        if v.id in own:
            found[("v", v.id)].append(device)
        if v.user_id in people:
            found[("u", v.user_id)].append(device)
    return found


def _clicks(conn: Connection, visitor_ids: set[str]) -> credit.Clicks:
    if not visitor_ids:
        return credit.Clicks([])
    query = sa.select(click_ids.c.visitor_id, click_ids.c.kind, click_ids.c.first_seen_at).where(
        click_ids.c.visitor_id.in_(sorted(visitor_ids))
    )
    return credit.Clicks(
        [credit.Click(r.visitor_id, r.kind, r.first_seen_at) for r in conn.execute(query)]
    )


def _key(row: Any, found: credit.Credit, currency: str) -> Key:
    first, last = found.first, found.last
    recovered = ",".join(f"{p}:{'+'.join(reasons)}" for p, reasons in found.recovered)
    return Key(
        row.occurred_at.replace(minute=0, second=0, microsecond=0),
        row.source,
        row.name,
        first.channel.value,
        first.source,
        first.medium,
        first.campaign,
        last.channel.value,
        last.source,
        last.medium,
        last.campaign,
        found.cross_device,
        currency,
        ",".join(found.clicked),
        recovered,
    )


def _upsert(conn: Connection, counts: Counter[Key], values: Counter[Key]) -> None:
    """One row per key, added to; sorted, so concurrent writers lock rows in the same order."""
    shard = shards.of(conn)
    rows = [_row(key, n, values[key]) | {"shard": shard} for key, n in sorted(counts.items()) if n]
    if not rows:
        return
    table = conversion_rollups
    name = conn.dialect.name
    stmt: Any
    if name in ("postgresql", "sqlite"):
        insert = postgresql.insert if name == "postgresql" else sqlite.insert
        base = insert(table)
        stmt = base.on_conflict_do_update(
            index_elements=[table.c.hour, table.c.key, table.c.shard],
            set_={
                "count": table.c.count + base.excluded["count"],
                "value_micros": table.c.value_micros + base.excluded["value_micros"],
            },
        )
    else:
        my = mysql.insert(table)
        stmt = my.on_duplicate_key_update(
            count=table.c.count + my.inserted["count"],
            value_micros=table.c.value_micros + my.inserted["value_micros"],
        )
    conn.execute(stmt, rows)


def _row(key: Key, n: int, micros: int) -> dict[str, Any]:
    dimensions = {name: getattr(key, name) for name in Key.__dataclass_fields__}
    return dimensions | {"key": key.digest, "count": n, "value_micros": micros}


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
