"""hourly report counts (event_rollups, delivery_rollups by UTC hour, not day), each event's
conversion decided at ingest (events.converted)

The daily rows are read, the tables made again with an `hour` column and every stored event and
outbox row counted by hour. What the daily rows counted beyond the stored rows (events pruned
by retention since 0009) is kept at 00:00 UTC of its day: its hour is not known.

Revision ID: 0012_reports
Revises: 0011_audiences
"""

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, time
from typing import Any

import sqlalchemy as sa
from alembic import op

from firstparty.delivery import tally
from firstparty.reports import rollups
from firstparty.store.models import UTCDateTime, deliveries, events, visitors

revision = "0012_reports"
down_revision = "0011_audiences"
branch_labels = None
depends_on = None

EVENT_KEY = ("source", "name", "bot", "converted", "utm_source", "utm_medium", "utm_campaign",
             "click_kinds")  # fmt: skip


def upgrade() -> None:
    conn = op.get_bind()
    op.add_column("events", sa.Column("converted", sa.Boolean(), nullable=True))
    daily = _daily_events(conn)
    present = _present_events(conn)
    daily_outbox = _daily_outbox(conn)
    present_outbox = _present_outbox(conn)
    op.drop_table("event_rollups")
    op.drop_table("delivery_rollups")
    _create_tables("hour", UTCDateTime())
    _insert(conn, "event_rollups", _left_events(daily, present))
    _insert(conn, "delivery_rollups", _left_outbox(daily_outbox, present_outbox))
    rollups.backfill(conn)
    _insert(conn, "delivery_rollups", _hourly_outbox(conn))


def downgrade() -> None:
    conn = op.get_bind()
    hourly = _summed(conn, "event_rollups", ("hour", "key", *EVENT_KEY))
    outbox = _summed(conn, "delivery_rollups", ("hour", "destination", "status"))
    op.drop_table("event_rollups")
    op.drop_table("delivery_rollups")
    _create_tables("day", sa.Date())
    _insert(conn, "event_rollups", _to_days(hourly, ("key", *EVENT_KEY)))
    _insert(conn, "delivery_rollups", _to_days(outbox, ("destination", "status")))
    op.drop_column("events", "converted")


def _create_tables(name: str, kind: sa.types.TypeEngine[Any]) -> None:
    op.create_table(
        "event_rollups",
        sa.Column(name, kind, nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("shard", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("bot", sa.Boolean(), nullable=False),
        sa.Column("converted", sa.Boolean(), nullable=False),
        sa.Column("utm_source", sa.String(length=255), nullable=False),
        sa.Column("utm_medium", sa.String(length=255), nullable=False),
        sa.Column("utm_campaign", sa.String(length=255), nullable=False),
        sa.Column("click_kinds", sa.String(length=128), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(name, "key", "shard", name="pk_event_rollups"),
    )
    op.create_table(
        "delivery_rollups",
        sa.Column(name, kind, nullable=False),
        sa.Column("destination", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("shard", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(name, "destination", "status", "shard", name="pk_delivery_rollups"),
    )


def _summed(conn: sa.Connection, table: str, columns: tuple[str, ...]) -> Counter[tuple[Any, ...]]:
    """A rollup table's counts summed over the shards, by `columns`."""
    t = sa.table(table, *(sa.column(c) for c in (*columns, "count")))
    picked = [t.c[c] for c in columns]
    query = sa.select(*picked, sa.func.sum(t.c["count"])).group_by(*picked)
    found: Counter[tuple[Any, ...]] = Counter()
    for row in conn.execute(query):
        found[tuple(_day(v) if i == 0 else v for i, v in enumerate(row[:-1]))] += int(row[-1])
    return found


def _day(value: object) -> object:
    """A date or hour as the driver answers it (SQLite: a string), as a date."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def _daily_events(conn: sa.Connection) -> Counter[tuple[Any, ...]]:
    counted = _summed(conn, "event_rollups", ("day", *EVENT_KEY))
    return Counter({(k[0], *(_plain(v) for v in k[1:])): n for k, n in counted.items()})


def _plain(value: object) -> object:
    return bool(value) if isinstance(value, int) and value in (0, 1) else value


def _rows(conn: sa.Connection, query: sa.Select[Any], id_column: sa.Column[Any]) -> Iterator[Any]:
    after: Any = None
    while True:
        page = query if after is None else query.where(id_column > after)
        rows = conn.execute(page.order_by(id_column).limit(5000)).all()
        if not rows:
            return
        yield from rows
        after = rows[-1][0]


def _present_events(conn: sa.Connection) -> Counter[tuple[Any, ...]]:
    """The stored events as 0009 counted them: converted when they have outbox rows."""
    had_outbox = sa.exists().where(deliveries.c.event_pk == events.c.id)
    query = sa.select(
        events.c.id,
        events.c.occurred_at,
        events.c.source,
        events.c.name,
        events.c.bot,
        had_outbox.label("converted"),
        visitors.c.first_touch,
    ).select_from(events.outerjoin(visitors, visitors.c.id == events.c.visitor_id))
    found: Counter[tuple[Any, ...]] = Counter()
    for r in _rows(conn, query, events.c.id):
        key = rollups._key(r.occurred_at, r.source, r.name, r.bot, bool(r.converted), r.first_touch)
        found[(r.occurred_at.date(), *_fields(key))] += 1
    return found


def _fields(key: rollups.Key) -> tuple[Any, ...]:
    return (key.source, key.name, key.bot, key.converted, key.utm_source, key.utm_medium,
            key.utm_campaign, key.click_kinds)  # fmt: skip


def _left_events(
    daily: Counter[tuple[Any, ...]], present: Counter[tuple[Any, ...]]
) -> list[dict[str, Any]]:
    """What the daily rows counted beyond the stored events, at 00:00 UTC of its day.

    Compared per day and key but `converted`: how the rows and the events were told apart
    may differ (a database taken down from 0012 and up again); the excess keeps the flag of
    the daily rows that hold it.
    """
    groups: dict[tuple[Any, ...], list[int]] = {}
    for sign, counts in ((1, daily), (-1, present)):
        for (day, source, name, bot, converted, *touch), n in counts.items():
            excess = groups.setdefault((day, source, name, bot, *touch), [0, 0])
            excess[bool(converted)] += sign * n
    left = []
    for (day, source, name, bot, *touch), (plain, converted) in sorted(groups.items(), key=repr):
        total = plain + converted
        kept = min(max(converted, 0), max(total, 0))
        for flag, n in ((True, kept), (False, max(total, 0) - kept)):
            if n > 0:
                key = rollups.Key(_midnight(day), source, name, bot, flag, *touch)
                left.append(rollups._row(key, n) | {"shard": 0})
    return left


def _daily_outbox(conn: sa.Connection) -> Counter[tuple[Any, ...]]:
    return _summed(conn, "delivery_rollups", ("day", "destination", "status"))


def _present_outbox(conn: sa.Connection) -> Counter[tuple[Any, ...]]:
    d = deliveries.c
    query = sa.select(d.id, d.created_at, d.destination, d.status)
    return Counter((r.created_at.date(), r.destination, r.status) for r in _rows(conn, query, d.id))


def _hourly_outbox(conn: sa.Connection) -> list[dict[str, Any]]:
    """The stored outbox rows counted by hour (the shape of this revision: no source yet)."""
    d = deliveries.c
    query = sa.select(d.id, d.created_at, d.destination, d.status)
    counted = Counter(
        (tally.hour(r.created_at), r.destination, r.status) for r in _rows(conn, query, d.id)
    )
    return [
        {"hour": hour, "destination": dest, "status": status, "shard": 1, "count": n}
        for (hour, dest, status), n in sorted(counted.items(), key=repr)
    ]


def _left_outbox(
    daily: Counter[tuple[Any, ...]], present: Counter[tuple[Any, ...]]
) -> list[dict[str, Any]]:
    return [
        {"hour": _midnight(day), "destination": dest, "status": status, "shard": 0, "count": n}
        for (day, dest, status), n in sorted((daily - present).items(), key=repr)
    ]


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def _to_days(hourly: Counter[tuple[Any, ...]], names: tuple[str, ...]) -> list[dict[str, Any]]:
    """Hourly counts (first field the hour, as a date) summed into days, for the downgrade."""
    return [
        {"day": key[0], **dict(zip(names, key[1:], strict=True)), "shard": 0, "count": n}
        for key, n in sorted(hourly.items(), key=repr)
        if n
    ]


def _insert(conn: sa.Connection, table: str, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    hour = UTCDateTime() if "hour" in rows[0] else sa.Date()
    bucket = "hour" if "hour" in rows[0] else "day"
    columns = [sa.column(bucket, hour), *(sa.column(c) for c in rows[0] if c != bucket)]
    t = sa.table(table, *columns)
    for start in range(0, len(rows), 1000):
        conn.execute(sa.insert(t), rows[start : start + 1000])
