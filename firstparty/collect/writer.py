"""Group commit: concurrent requests share one transaction, and each 202 follows its commit.

One commit per request caps ingest at the disk's fsync rate (~1k/s); batching the rows of
requests that arrive within a few milliseconds into one transaction keeps the promise (the
event and its outbox rows are durable before the answer) and multiplies throughput.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from firstparty import metrics
from firstparty.collect import boundary, sessions, touch
from firstparty.collect.prepare import Prepared
from firstparty.delivery import outbox as delivery_outbox
from firstparty.destinations import book
from firstparty.errors import FieldError
from firstparty.reports import conversion_rollups, rollups
from firstparty.store import partitions
from firstparty.store.db import bulk_insert
from firstparty.store.models import click_ids, event_keys, events, visitors

log = logging.getLogger("firstparty.collect")
# Which destinations want an event, and whether it is a conversion for one of them:
# (type, name, flagged as a bot) -> book.Route.
Router = Callable[[str, str, bool], book.Route]
# Resolves a person named by phone (server sources) to a user id, inside the transaction.
PhoneResolver = Callable[[Connection, str], str | None]


@dataclass(frozen=True)
class Stored:
    pk: str  # the stored row's id (the earlier row's, for a duplicate)
    duplicate: bool
    user_id: str | None
    queued: int = 0  # outbox rows written for it: workers need waking only when > 0


# Groups written at once where the database takes concurrent transactions.
IN_FLIGHT = 2
WARN_EVERY_SECONDS = 10.0


def write(
    conn: Connection,
    items: Sequence[Prepared],
    route: Router,
    resolve_phone: PhoneResolver | None = None,
) -> list[Stored]:
    """Store events, their visitors' touches and their outbox rows in the caller's transaction.

    A fixed handful of statements per batch, whatever its size (executemany throughout).
    """
    users, sessions = _store_visitors(conn, items)
    people = [_person(conn, item, users, resolve_phone) for item in items]
    routes = [route(item.type, item.name, item.bot is not None) for item in items]
    rows = [
        _event_row(item, user_id, sessions.get(item.pk), way.conversion)
        for item, user_id, way in zip(items, people, routes, strict=True)
    ]
    landed = _store_events(conn, rows)
    _store_own_clicks(conn, [item for item in items if item.pk in landed])
    stored: list[Stored] = []
    outbox: list[dict[str, Any]] = []
    converted: list[str] = []
    for item, user_id, way in zip(items, people, routes, strict=True):
        if item.pk in landed:
            work = [_outbox_row(item, name) for name in way.destinations]
            outbox += work
            if way.conversion:
                converted.append(item.pk)
            stored.append(Stored(item.pk, False, user_id, len(work)))
        else:
            stored.append(Stored(_original_pk(conn, item), True, user_id))
    delivery_outbox.enqueue(conn, outbox)
    if converted:  # nothing to read or write for a batch without a conversion
        conversion_rollups.add(conn, converted)
    rollups.add(conn, landed)  # last: the rows it locks are held only until the commit
    return stored


def _person(
    conn: Connection,
    item: Prepared,
    users: dict[str, str | None],
    resolve_phone: PhoneResolver | None,
) -> str | None:
    """The user id stored with the event: a browser's visitor's user; else as stated, by phone."""
    if item.source.kind == "browser" and item.visitor_id:
        return users.get(item.visitor_id)
    if item.user_id is not None:
        return item.user_id
    if item.phone_e164 and resolve_phone:
        return resolve_phone(conn, item.phone_e164)
    return users.get(item.visitor_id) if item.visitor_id else None


def _store_visitors(
    conn: Connection, items: Sequence[Prepared]
) -> tuple[dict[str, str | None], dict[str, dict[str, str]]]:
    """Create new visitors, move known ones' last touch and session on.

    Returns (visitor -> user id, event pk -> its GA4 session fields for the stored context).
    """
    latest: dict[str, Prepared] = {}
    first: dict[str, Prepared] = {}
    for item in items:
        if item.visitor_id:
            first.setdefault(item.visitor_id, item)
            latest[item.visitor_id] = item
    if not latest:
        return {}, {}
    # A visitor id minted for this request (a new cookie) cannot be in the table yet.
    maybe_known = [v for v, item in latest.items() if not first[v].new_visitor]
    known: dict[str, Any] = {}
    if maybe_known:
        rows = conn.execute(
            sa.select(
                visitors.c.id,
                visitors.c.user_id,
                visitors.c.last_seen_at,
                visitors.c.session_started_at,
                visitors.c.session_number,
            ).where(visitors.c.id.in_(maybe_known))
        )
        known = {r.id: r for r in rows}
    states = {v: sessions.State.of(known.get(v)) for v in latest}
    fields = sessions.follow(items, states)
    campaigns = _last_campaigns(items)
    new = [
        {
            "id": visitor_id,
            "user_id": None,
            "first_seen_at": item.received_at,
            "last_seen_at": latest[visitor_id].received_at,
            "first_touch": _touch(item),
            "last_touch": _touch(campaigns.get(visitor_id) or item),
            "session_started_at": states[visitor_id].started_at,
            "session_number": states[visitor_id].number or None,
        }
        for visitor_id, item in first.items()
        if visitor_id not in known
    ]
    # The first visit is written once: a row another process created meanwhile is kept.
    bulk_insert(conn, visitors, new, ignore=True)
    _move_on(
        conn,
        [item for visitor_id, item in sorted(latest.items()) if visitor_id in known],
        campaigns,
        states,
    )
    seen = [
        _click_row(item, kind, value, visitor_id=item.visitor_id)
        for item in items
        if item.visitor_id
        for kind, value in item.click_ids.items()
    ]
    # Unique (visitor, kind, value): a click id seen again keeps its first-seen time.
    bulk_insert(conn, click_ids, seen, ignore=True)
    users = {v: known[v].user_id if v in known else None for v in latest}
    return users, fields


def _store_own_clicks(conn: Connection, landed: Sequence[Prepared]) -> None:
    """A server event's click ids with no visitor to hold them: kept for that event alone."""
    rows = [
        _click_row(item, kind, value, event_pk=item.pk)
        for item in landed
        if not item.visitor_id
        for kind, value in item.click_ids.items()
    ]
    bulk_insert(conn, click_ids, rows)


def _click_row(
    item: Prepared,
    kind: str,
    value: str,
    *,
    visitor_id: str | None = None,
    event_pk: str | None = None,
) -> dict[str, Any]:
    return {
        "visitor_id": visitor_id,
        "event_pk": event_pk,
        "kind": kind,
        "value": value,
        "first_seen_at": item.clicked_at or item.received_at,
        "url": item.landing_url,
    }


def _last_campaigns(items: Sequence[Prepared]) -> dict[str, Prepared]:
    """Each visitor's last event of this batch that is a campaign touch (one pass)."""
    return {item.visitor_id: item for item in items if item.visitor_id and _is_touch(item)}


def _is_touch(item: Prepared) -> bool:
    return touch.is_campaign(item.referrer, item.landing_url, item.click_ids, item.utm)


def _move_on(
    conn: Connection,
    latest: list[Prepared],
    campaigns: dict[str, Prepared],
    states: dict[str, sessions.State],
) -> None:
    """Known visitors: last seen now, their session, and a new last touch if this batch has one."""
    seen = [
        {
            "vid": i.visitor_id,
            "seen": i.received_at,
            "started": states[i.visitor_id or ""].started_at,
            "number": states[i.visitor_id or ""].number or None,
        }
        for i in latest
    ]
    touched = []
    for item in latest:
        campaign = campaigns.get(item.visitor_id or "")
        if campaign is not None:
            touched.append({"vid": item.visitor_id, "touch": _touch(campaign)})
    by_id = visitors.c.id == sa.bindparam("vid")
    if seen:
        moved = visitors.update().where(by_id)
        conn.execute(
            moved.values(
                last_seen_at=sa.bindparam("seen"),
                session_started_at=sa.bindparam("started"),
                session_number=sa.bindparam("number"),
            ),
            seen,
        )
    if touched:
        conn.execute(
            visitors.update().where(by_id).values(last_touch=sa.bindparam("touch")), touched
        )


def _touch(item: Prepared) -> dict[str, Any]:
    return touch.touch(
        url=item.landing_url,
        referrer=item.referrer,
        at=item.received_at,
        clicks=item.click_ids,
        utm=item.utm,
    )


def _store_events(conn: Connection, rows: list[dict[str, Any]]) -> set[str]:
    """Insert the events whose (source, event_id) is new; the pks of those inserted.

    A partitioned `events` (PostgreSQL) cannot hold that unique key: its `event_keys` row is
    claimed first, in the same transaction, and only the events that claimed one are inserted.
    """
    if not partitions.partitioned(conn.dialect):
        return bulk_insert(conn, events, rows, ignore=True, key="id") or set()
    keys = [{"source": r["source"], "event_id": r["event_id"], "event_pk": r["id"]} for r in rows]
    landed: set[str] = bulk_insert(conn, event_keys, keys, ignore=True, key="event_pk") or set()
    bulk_insert(conn, events, [row for row in rows if row["id"] in landed])
    return landed


def _original_pk(conn: Connection, item: Prepared) -> str:
    if partitions.partitioned(conn.dialect):
        table, pk = event_keys, event_keys.c.event_pk
    else:
        table, pk = events, events.c.id
    query = sa.select(pk).where(
        table.c.source == item.source.name, table.c.event_id == item.event_id
    )
    return str(conn.execute(query).scalar_one())


def _event_row(
    item: Prepared, user_id: str | None, session: dict[str, str] | None, converted: bool
) -> dict[str, Any]:
    return {
        "id": item.pk,
        "source": item.source.name,
        "event_id": item.event_id,
        "type": item.type,
        "name": item.name,
        "occurred_at": item.occurred_at,
        "received_at": item.received_at,
        "visitor_id": item.visitor_id,
        "user_id": user_id,
        "request": item.request,
        "response": {
            "ok": True,
            "id": item.pk,
            "event_id": item.event_id,
            "visitor_id": item.visitor_id,
            **({"warnings": [_warning(w) for w in item.warnings]} if item.warnings else {}),
        },
        "user": item.user,
        "context": {**item.context, **session} if session else item.context,
        "consent": item.consent,
        "bot": item.bot,
        "converted": converted,
    }


def _warning(warning: FieldError) -> dict[str, str]:
    return {"field": warning.field, "message": warning.message}


def _outbox_row(item: Prepared, destination: str) -> dict[str, Any]:
    return delivery_outbox.row(
        event_pk=item.pk,
        destination=destination,
        source=item.source.name,
        occurred_at=item.occurred_at,
        now=item.received_at,
    )


class GroupWriter:
    """Collects prepared events from concurrent requests and commits them together."""

    def __init__(
        self,
        engine: Engine,
        route: Router,
        *,
        window_ms: float,
        max_rows: int,
        resolve_phone: PhoneResolver | None = None,
    ) -> None:
        self._engine = engine
        self._route = route
        self._resolve_phone = resolve_phone
        self._window = window_ms / 1000
        self._max_rows = max_rows
        self._queue: asyncio.Queue[list[tuple[Prepared, asyncio.Future[Stored]]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        # PostgreSQL/MySQL take concurrent transactions: the next group is written while the
        # previous one waits for its commit. SQLite has one writer: one group at a time.
        one_writer = engine.dialect.name == "sqlite"
        self._slots = asyncio.Semaphore(1 if one_writer else IN_FLIGHT)
        self._flushing: set[asyncio.Task[None]] = set()
        self._unavailable, self._next_warning = 0, 0.0

    async def submit(self, item: Prepared) -> Stored:
        """Store one event; returns once its transaction has committed.

        Raises what the database raised, for collect.boundary to sort: when a group fails, an
        unavailable database fails all of it; anything else is retried one event at a time, so
        a value the database refuses (or a bug one event triggers) fails that event alone.
        """
        [future] = self._enqueue([item])
        return await future

    async def submit_together(self, items: Sequence[Prepared]) -> list[Stored | Exception]:
        """Store these events in one group (one transaction), in order; each outcome in turn.

        For the events of one request that share a visitor minted for it: written together,
        the new visitor is created once, its first touch from the first of them.
        """
        futures = self._enqueue(items)
        done = await asyncio.gather(*futures, return_exceptions=True)
        return [r if isinstance(r, Stored | Exception) else _reraise(r) for r in done]

    def _enqueue(self, items: Sequence[Prepared]) -> list[asyncio.Future[Stored]]:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        loop = asyncio.get_running_loop()
        entries = [(item, loop.create_future()) for item in items]
        if entries:
            self._queue.put_nowait(entries)
        return [future for _, future in entries]

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._flushing:
            await asyncio.gather(*self._flushing, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            batch = await self._queue.get()
            if self._window:
                await asyncio.sleep(self._window)
            await self._slots.acquire()
            while len(batch) < self._max_rows and not self._queue.empty():
                batch += self._queue.get_nowait()
            task = asyncio.create_task(self._flush_then_release(batch))
            self._flushing.add(task)
            task.add_done_callback(self._flushing.discard)

    async def _flush_then_release(
        self, batch: list[tuple[Prepared, asyncio.Future[Stored]]]
    ) -> None:
        try:
            await self._flush(batch)
        finally:
            self._slots.release()

    async def _flush(self, batch: list[tuple[Prepared, asyncio.Future[Stored]]]) -> None:
        items = [item for item, _ in batch]
        try:
            results = await asyncio.to_thread(self._commit, items)
        except Exception as exc:
            unavailable = boundary.classify(exc) is boundary.Kind.UNAVAILABLE
            if len(batch) > 1 and not unavailable:
                # A value refused, or a bug one event triggers: fail that event, not its group.
                await self._one_by_one(batch)
                return
            if unavailable:
                self._warn_unavailable(len(batch), exc)
            for _, future in batch:
                _fail(future, exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            _resolve(future, result)

    async def _one_by_one(self, batch: list[tuple[Prepared, asyncio.Future[Stored]]]) -> None:
        for item, future in batch:
            try:
                [result] = await asyncio.to_thread(self._commit, [item])
            except Exception as exc:
                _fail(future, exc)
            else:
                _resolve(future, result)

    def _warn_unavailable(self, count: int, exc: Exception) -> None:
        """One line at most every WARN_EVERY_SECONDS while the database is away, with a count."""
        self._unavailable += count
        now = time.monotonic()
        if now >= self._next_warning:
            log.warning(
                "ingest: storage unavailable, %d event(s) answered 503: %s", self._unavailable, exc
            )
            self._unavailable, self._next_warning = 0, now + WARN_EVERY_SECONDS

    def _commit(self, items: list[Prepared]) -> list[Stored]:
        with metrics.COMMIT_SECONDS.time(), self._engine.begin() as conn:
            stored = write(conn, items, self._route, self._resolve_phone)
        metrics.COMMIT_ROWS.observe(len(items))
        return stored


def _reraise(error: BaseException) -> Stored:
    raise error  # a cancellation, not an outcome


def _resolve(future: asyncio.Future[Stored], result: Stored) -> None:
    if not future.done():  # the request may have gone (client disconnected)
        future.set_result(result)


def _fail(future: asyncio.Future[Stored], exc: Exception) -> None:
    if not future.done():
        future.set_exception(exc)
