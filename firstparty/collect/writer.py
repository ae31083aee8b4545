"""Group commit: concurrent requests share one transaction, and each 202 follows its commit.

One commit per request caps ingest at the disk's fsync rate (~1k/s); batching the rows of
requests that arrive within a few milliseconds into one transaction keeps the promise (the
event and its outbox rows are durable before the answer) and multiplies throughput.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from firstparty import metrics
from firstparty.collect import touch
from firstparty.collect.prepare import Prepared
from firstparty.store.db import bulk_insert
from firstparty.store.models import click_ids, deliveries, events, visitors

# Which destinations want an event: (type, name) -> destination names.
Router = Callable[[str, str], Sequence[str]]
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


class StorageUnavailable(Exception):
    """The database could not be written; the caller answers 503 and may retry."""


def write(
    conn: Connection,
    items: Sequence[Prepared],
    route: Router,
    resolve_phone: PhoneResolver | None = None,
) -> list[Stored]:
    """Store events, their visitors' touches and their outbox rows in the caller's transaction.

    A fixed handful of statements per batch, whatever its size (executemany throughout).
    """
    users = _store_visitors(conn, items)
    for item in items:
        if item.source.kind == "browser" and item.visitor_id:
            item.user_id = users.get(item.visitor_id)
        elif item.user_id is None and item.phone_e164 and resolve_phone:
            item.user_id = resolve_phone(conn, item.phone_e164)
        elif item.user_id is None and item.visitor_id:
            item.user_id = users.get(item.visitor_id)
    landed = (
        bulk_insert(conn, events, [_event_row(i) for i in items], ignore=True, key="id") or set()
    )
    stored: list[Stored] = []
    outbox: list[dict[str, Any]] = []
    for item in items:
        if item.pk in landed:
            work = [_delivery_row(item, name) for name in route(item.type, item.name)]
            outbox += work
            stored.append(Stored(item.pk, False, item.user_id, len(work)))
        else:
            stored.append(Stored(_original_pk(conn, item), True, item.user_id))
    bulk_insert(conn, deliveries, outbox)
    return stored


def _store_visitors(conn: Connection, items: Sequence[Prepared]) -> dict[str, str | None]:
    """Create new visitors, move known ones' last touch on; returns visitor -> user id."""
    latest: dict[str, Prepared] = {}
    first: dict[str, Prepared] = {}
    for item in items:
        if item.visitor_id:
            first.setdefault(item.visitor_id, item)
            latest[item.visitor_id] = item
    if not latest:
        return {}
    # A visitor id minted for this request (a new cookie) cannot be in the table yet.
    maybe_known = [v for v, item in latest.items() if not first[v].new_visitor]
    known: dict[str, str | None] = {}
    if maybe_known:
        rows = conn.execute(
            sa.select(visitors.c.id, visitors.c.user_id).where(visitors.c.id.in_(maybe_known))
        )
        known = {r.id: r.user_id for r in rows}
    new = [
        {
            "id": visitor_id,
            "user_id": None,
            "first_seen_at": item.received_at,
            "last_seen_at": latest[visitor_id].received_at,
            "first_touch": _touch(item),
            "last_touch": _touch(_last_campaign(visitor_id, items) or item),
        }
        for visitor_id, item in first.items()
        if visitor_id not in known
    ]
    # The first visit is written once: a row another process created meanwhile is kept.
    bulk_insert(conn, visitors, new, ignore=True)
    _move_on(
        conn, [item for visitor_id, item in sorted(latest.items()) if visitor_id in known], items
    )
    seen = [
        {
            "visitor_id": item.visitor_id,
            "kind": kind,
            "value": value,
            "first_seen_at": item.received_at,
            "url": item.landing_url,
        }
        for item in items
        if item.visitor_id
        for kind, value in item.click_ids.items()
    ]
    # Unique (visitor, kind, value): a click id seen again keeps its first-seen time.
    bulk_insert(conn, click_ids, seen, ignore=True)
    return {visitor_id: known.get(visitor_id) for visitor_id in latest}


def _last_campaign(visitor_id: str, items: Sequence[Prepared]) -> Prepared | None:
    found = None
    for item in items:
        if item.visitor_id == visitor_id and _is_touch(item):
            found = item
    return found


def _is_touch(item: Prepared) -> bool:
    return touch.is_campaign(item.referrer, item.landing_url, item.click_ids, item.utm)


def _move_on(conn: Connection, latest: list[Prepared], items: Sequence[Prepared]) -> None:
    """Known visitors: last seen now, and a new last touch when this batch brought one."""
    seen = [{"vid": i.visitor_id, "seen": i.received_at} for i in latest]
    touched = []
    for item in latest:
        campaign = _last_campaign(item.visitor_id or "", items)
        if campaign is not None:
            touched.append({"vid": item.visitor_id, "touch": _touch(campaign)})
    by_id = visitors.c.id == sa.bindparam("vid")
    if seen:
        conn.execute(visitors.update().where(by_id).values(last_seen_at=sa.bindparam("seen")), seen)
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


def _original_pk(conn: Connection, item: Prepared) -> str:
    query = sa.select(events.c.id).where(
        events.c.source == item.source.name, events.c.event_id == item.event_id
    )
    return str(conn.execute(query).scalar_one())


def _event_row(item: Prepared) -> dict[str, Any]:
    return {
        "id": item.pk,
        "source": item.source.name,
        "event_id": item.event_id,
        "type": item.type,
        "name": item.name,
        "occurred_at": item.occurred_at,
        "received_at": item.received_at,
        "visitor_id": item.visitor_id,
        "user_id": item.user_id,
        "request": item.request,
        "response": {
            "ok": True,
            "id": item.pk,
            "event_id": item.event_id,
            "visitor_id": item.visitor_id,
        },
        "user": item.user,
        "context": item.context,
        "consent": item.consent,
    }


def _delivery_row(item: Prepared, destination: str) -> dict[str, Any]:
    return {
        "event_pk": item.pk,
        "destination": destination,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": item.received_at,
        "occurred_at": item.occurred_at,
        "created_at": item.received_at,
        "updated_at": item.received_at,
    }


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
        self._queue: asyncio.Queue[tuple[Prepared, asyncio.Future[Stored]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        # PostgreSQL/MySQL take concurrent transactions: the next group is written while the
        # previous one waits for its commit. SQLite has one writer: one group at a time.
        one_writer = engine.dialect.name == "sqlite"
        self._slots = asyncio.Semaphore(1 if one_writer else IN_FLIGHT)
        self._flushing: set[asyncio.Task[None]] = set()

    async def submit(self, item: Prepared) -> Stored:
        """Store one event; returns once its transaction has committed."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        future: asyncio.Future[Stored] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, future))
        return await future

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._flushing:
            await asyncio.gather(*self._flushing, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            if self._window:
                await asyncio.sleep(self._window)
            await self._slots.acquire()
            while len(batch) < self._max_rows and not self._queue.empty():
                batch.append(self._queue.get_nowait())
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
        except Exception:
            # One bad row must not fail its neighbours: retry each on its own.
            for item, future in batch:
                try:
                    result = (await asyncio.to_thread(self._commit, [item]))[0]
                except Exception as exc:
                    if not future.done():
                        future.set_exception(StorageUnavailable(str(exc)))
                else:
                    if not future.done():
                        future.set_result(result)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    def _commit(self, items: list[Prepared]) -> list[Stored]:
        with metrics.COMMIT_SECONDS.time(), self._engine.begin() as conn:
            stored = write(conn, items, self._route, self._resolve_phone)
        metrics.COMMIT_ROWS.observe(len(items))
        return stored
