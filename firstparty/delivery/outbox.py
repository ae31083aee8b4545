"""The outbox: the one owner of the `deliveries` rows and of their status.

Rows are enqueued in the event's own transaction (`enqueue`), claimed with a lease (`claim`),
kept alive while their worker sends them (`extend`), finished the moment their answer is known
(`finish`), handed back when a round is cut short (`release`) and requeued by a replay
(`requeue`). Nothing else writes `deliveries.status`. Each change moves the per-hour counts of
`delivery.tally` in the same transaction, from the rows it changed, read under lock first.

Some platforms accept a request and decide later (Google Data Manager answers a request id).
Such work finishes `confirming` with the platform's `request_id` and a `confirm_until`
deadline; `next_attempt_at` is then the time of the next follow-up. A claim takes due
`confirming` rows as well: a claim whose row has `confirm_until` set is a follow-up (it asks
what became of the request, it does not send the event again), also when a dead worker's lease
returns it. A follow-up is not an attempt: it leaves `attempts` as it was.

A claim takes `pending` rows that are due and `inflight` rows whose lease ran out (a worker died
mid-request: this is the sweeper), marks them `inflight` until `now + lease` and counts the
attempt. PostgreSQL and MariaDB lock the chosen rows with `FOR UPDATE SKIP LOCKED`, so
concurrent workers pass each other by; SQLite has one writer (`BEGIN IMMEDIATE`), so the
select-then-update is atomic there too. Finishing updates a row only while it is still the
claim we made (`status='inflight' AND attempts=:claimed`): a worker whose lease expired cannot
overwrite the newer claim of another worker.

Times are the workers' clocks (UTC); keep the hosts in NTP sync.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from firstparty.delivery import failures, tally
from firstparty.store import db
from firstparty.store.models import LAST_ERROR_CHARS, deliveries


class DeliveryStatus(StrEnum):
    """Where one (event, destination) delivery stands; also the status of a logged request."""

    PENDING = "pending"  # waiting until next_attempt_at
    INFLIGHT = "inflight"  # claimed by a worker until next_attempt_at (the lease)
    CONFIRMING = "confirming"  # accepted; the platform's final word is asked at next_attempt_at
    DELIVERED = "delivered"
    TEST = "test"  # accepted in the platform's test mode: nothing was counted there
    SKIPPED = "skipped"  # not sent on purpose (consent, age window, dry run), with the reason
    FAILED = "failed"  # refused or out of tries; kept for replay


ACTIVE = (DeliveryStatus.PENDING, DeliveryStatus.INFLIGHT, DeliveryStatus.CONFIRMING)
FINAL = (
    DeliveryStatus.DELIVERED,
    DeliveryStatus.TEST,
    DeliveryStatus.SKIPPED,
    DeliveryStatus.FAILED,
)
# Lock conflicts the engines resolve by aborting one side: try the claim again.
_RETRYABLE_CODES = {1205, 1213, "40001", "40P01"}

T = TypeVar("T")


@dataclass(frozen=True)
class Claim:
    """One delivery this worker now holds; `attempt` is the number of this try (1-based)."""

    id: int
    event_pk: str
    destination: str
    attempt: int
    first_attempt_at: datetime
    # Set on a follow-up: the platform's id of the accepted request, and when to stop asking.
    request_id: str | None = None
    confirm_until: datetime | None = None

    @property
    def follow_up(self) -> bool:
        return self.confirm_until is not None and self.request_id is not None


@dataclass(frozen=True)
class Finish:
    """How a claimed delivery ends this attempt."""

    claim: Claim
    status: DeliveryStatus  # pending: retry at next_attempt_at; confirming: ask then
    next_attempt_at: datetime
    last_error: str | None = None
    request_id: str | None = None  # the platform's id of the accepted request, kept
    confirm_until: datetime | None = None  # while confirming: when to stop asking

    def __post_init__(self) -> None:
        if self.last_error is not None and len(self.last_error) > LAST_ERROR_CHARS:
            object.__setattr__(self, "last_error", self.last_error[:LAST_ERROR_CHARS])


def row(
    *, event_pk: str, destination: str, source: str, occurred_at: datetime, now: datetime
) -> dict[str, Any]:
    """A new outbox row: due now."""
    return {
        "event_pk": event_pk,
        "destination": destination,
        "source": source,
        "status": DeliveryStatus.PENDING,
        "attempts": 0,
        "next_attempt_at": now,
        "occurred_at": occurred_at,
        "created_at": now,
        "updated_at": now,
    }


def enqueue(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Add these rows (from `row`) in the caller's transaction: the event's own."""
    db.bulk_insert(conn, deliveries, list(rows))
    tally.added(conn, rows)


def oldest_due(engine: Engine, *, now: datetime) -> datetime | None:
    """When the delivery that has waited longest became due (None when nothing is due): the
    queue lag. One lookup per active status on ix_deliveries_status_next_attempt_at."""
    d = deliveries.c
    with db.reader(engine) as conn:
        firsts = [
            conn.execute(sa.select(sa.func.min(d.next_attempt_at)).where(d.status == s)).scalar()
            for s in ACTIVE
        ]
    return min((t for t in firsts if t is not None and t <= now), default=None)


def claim(
    engine: Engine,
    *,
    destinations: Collection[str],
    now: datetime,
    lease_seconds: float,
    limit: int,
) -> list[Claim]:
    """Take up to `limit` due deliveries for these destinations, oldest due first."""
    if not destinations:
        return []
    return _with_retries(lambda: _claim_once(engine, destinations, now, lease_seconds, limit))


def _claim_once(
    engine: Engine, destinations: Collection[str], now: datetime, lease: float, limit: int
) -> list[Claim]:
    d = deliveries.c
    with engine.begin() as conn:
        rows = _due(conn, destinations, now, limit)
        if not rows:
            return []
        sends = sa.case((d.confirm_until.is_(None), 1), else_=0)  # a follow-up is no attempt
        conn.execute(
            sa.update(deliveries)
            .where(d.id.in_([r.id for r in rows]))
            .values(
                status=DeliveryStatus.INFLIGHT,
                attempts=d.attempts + sends,
                next_attempt_at=now + timedelta(seconds=lease),
                first_attempt_at=sa.func.coalesce(d.first_attempt_at, now),
                updated_at=now,
            )
        )
        inflight = DeliveryStatus.INFLIGHT.value
        tally.move(conn, ((_place(r), _place(r, inflight)) for r in rows))
    return [
        Claim(
            r.id,
            r.event_pk,
            r.destination,
            r.attempts + (1 if r.confirm_until is None else 0),
            r.first_attempt_at or now,
            r.request_id,
            r.confirm_until,
        )
        for r in rows
    ]


def finish(conn: Connection, finishes: Sequence[Finish], now: datetime) -> None:
    """Record the end of these attempts, each only if the claim is still ours."""
    if not finishes:
        return
    current = _held(conn, [f.claim.id for f in finishes])
    ours = [f for f in finishes if _still_ours(current.get(f.claim.id), f.claim.attempt)]
    tally.move(
        conn, ((_place(current[f.claim.id]), _place(current[f.claim.id], f.status)) for f in ours)
    )
    failed = DeliveryStatus.FAILED
    failures.move(conn, ((f.claim.destination, f.last_error) for f in ours if f.status == failed))
    dialect = conn.dialect
    if dialect.name in db.FAST_DIALECTS:
        # The same guarded UPDATE, written once and sent in one driver call: SQLAlchemy's
        # per-row parameter processing costs more than SQLite's work for these rows.
        when = db.datetime_param(dialect)
        at = when(now)
        db.executemany(
            conn,
            _FINISH_SQL.format(p=db.placeholder(dialect)),
            [
                (
                    f.status,
                    when(f.next_attempt_at),
                    f.last_error,
                    f.request_id,
                    None if f.confirm_until is None else when(f.confirm_until),
                    at,
                    f.claim.id,
                    f.claim.attempt,
                )
                for f in finishes
            ],
        )
        return
    d = deliveries.c
    guarded = (
        sa.update(deliveries)
        .where(
            d.id == sa.bindparam("b_id"),
            d.status == DeliveryStatus.INFLIGHT,
            d.attempts == sa.bindparam("b_attempt"),
        )
        .values(
            status=sa.bindparam("b_status"),
            next_attempt_at=sa.bindparam("b_next"),
            last_error=sa.bindparam("b_error"),
            request_id=sa.bindparam("b_request"),
            confirm_until=sa.bindparam("b_until"),
            updated_at=now,
        )
    )
    conn.execute(
        guarded,
        [
            {
                "b_id": f.claim.id,
                "b_attempt": f.claim.attempt,
                "b_status": f.status,
                "b_next": f.next_attempt_at,
                "b_error": f.last_error,
                "b_request": f.request_id,
                "b_until": f.confirm_until,
            }
            for f in finishes
        ],
    )


_FINISH_SQL = (
    "UPDATE deliveries SET status = {p}, next_attempt_at = {p}, last_error = {p},"
    " request_id = {p}, confirm_until = {p}, updated_at = {p} WHERE deliveries.id = {p}"
    f" AND deliveries.status = '{DeliveryStatus.INFLIGHT}' AND deliveries.attempts = {{p}}"
)


def _place(row: sa.Row[Any], status: str | None = None) -> tally.Place:
    """Where a row counts in the tally: its creation hour, destination, (new) status, source."""
    return (
        tally.hour(row.created_at),
        row.destination,
        str(status or row.status),
        row.source or "",
    )


def _held(conn: Connection, ids: Sequence[int], *extra: sa.Column[Any]) -> dict[int, sa.Row[Any]]:
    """These outbox rows as they are (with the `extra` columns asked for), locked until the
    transaction ends (SQLite: one writer)."""
    d = deliveries.c
    columns = (d.id, d.status, d.attempts, d.destination, d.created_at, d.confirm_until, d.source)
    query: sa.Select[Any] = sa.select(*columns, *extra).where(d.id.in_(ids))
    if conn.dialect.name != "sqlite":
        query = query.with_for_update()
    return {row.id: row for row in conn.execute(query)}


def _still_ours(row: sa.Row[Any] | None, attempt: int) -> bool:
    return row is not None and row.status == DeliveryStatus.INFLIGHT and row.attempts == attempt


def extend(engine: Engine, claims: Iterable[Claim], *, until: datetime) -> int:
    """Move the lease of these claims (those still ours) on to `until`: the worker is alive."""
    groups = _by_attempt(claims)
    if not groups:
        return 0
    d = deliveries.c
    moved = 0
    with engine.begin() as conn:
        for (attempt, _follow_up), ids in groups.items():
            result = conn.execute(
                sa.update(deliveries)
                .where(d.id.in_(ids), d.status == DeliveryStatus.INFLIGHT, d.attempts == attempt)
                .values(next_attempt_at=until)
            )
            moved += result.rowcount
    return moved


def release(engine: Engine, claims: Iterable[Claim], *, now: datetime) -> None:
    """Hand back claims whose round was cut short: due again now, the attempt not counted."""
    groups = _by_attempt(claims)
    if not groups:
        return
    d = deliveries.c
    waiting = sa.case(
        (d.confirm_until.is_(None), DeliveryStatus.PENDING.value),
        else_=DeliveryStatus.CONFIRMING.value,
    )
    with engine.begin() as conn:
        for (attempt, follow_up), ids in groups.items():
            current = _held(conn, ids)
            back = [r for r in current.values() if _still_ours(r, attempt)]
            tally.move(conn, ((_place(r), _place(r, _waiting_status(r))) for r in back))
            conn.execute(
                sa.update(deliveries)
                .where(d.id.in_(ids), d.status == DeliveryStatus.INFLIGHT, d.attempts == attempt)
                .values(
                    status=waiting,
                    attempts=attempt - (0 if follow_up else 1),
                    next_attempt_at=now,
                    updated_at=now,
                )
            )


def _waiting_status(row: sa.Row[Any]) -> str:
    """What `release` puts back: a follow-up to confirming, a send to pending."""
    return DeliveryStatus.PENDING if row.confirm_until is None else DeliveryStatus.CONFIRMING


def _by_attempt(claims: Iterable[Claim]) -> dict[tuple[int, bool], list[int]]:
    """Claim ids grouped by the guard their updates need: (attempt, follow-up or send)."""
    groups: dict[tuple[int, bool], list[int]] = {}
    for one in claims:
        groups.setdefault((one.attempt, one.follow_up), []).append(one.id)
    return groups


def requeue(conn: Connection, ids: Sequence[int], now: datetime) -> None:
    """Failed work due again now with a fresh retry window (a replay)."""
    d = deliveries.c
    held = _held(conn, ids, deliveries.c.last_error)
    failed = [r for r in held.values() if r.status == DeliveryStatus.FAILED]
    tally.move(conn, ((_place(r), _place(r, DeliveryStatus.PENDING)) for r in failed))
    failures.move(conn, (), ((r.destination, r.last_error) for r in failed))
    conn.execute(
        sa.update(deliveries)
        .where(d.id.in_(ids), d.status == DeliveryStatus.FAILED)
        .values(
            status=DeliveryStatus.PENDING,
            attempts=0,
            next_attempt_at=now,
            first_attempt_at=None,
            request_id=None,
            confirm_until=None,
            updated_at=now,
        )
    )


def _due(
    conn: Connection, destinations: Collection[str], now: datetime, limit: int
) -> list[sa.Row[Any]]:
    """The `limit` rows due first, locked (skipping those another worker holds). One query per
    active status, each read in order from the (status, next_attempt_at) index and merged here:
    one query over the three statuses read every due row and sorted them all (PostgreSQL: 470 ms
    a claim with 422,000 waiting, spilling the sort to disk), so a backlog slowed its own drain."""
    d = deliveries.c
    columns = [d.id, d.event_pk, d.destination, d.attempts, d.first_attempt_at, d.request_id]
    columns += [d.confirm_until, d.status, d.created_at, d.source, d.next_attempt_at]
    rows: list[sa.Row[Any]] = []
    for status in ACTIVE:
        due = _in_due_order(status, destinations, *columns).where(d.next_attempt_at <= now)
        rows += conn.execute(db.skip_locked(due.limit(limit), conn)).all()
    # Rows locked here but not kept are let go at this transaction's end, untouched.
    return sorted(rows, key=lambda r: r.next_attempt_at)[:limit]


def _in_due_order(
    status: DeliveryStatus, destinations: Collection[str], *columns: Any
) -> sa.Select[Any]:
    """One status's work for these destinations, earliest due first: read in order from the
    (status, next_attempt_at) index."""
    d = deliveries.c
    return (
        sa.select(*columns)
        .where(d.status == status, d.destination.in_(sorted(destinations)))
        .order_by(d.next_attempt_at)
    )


def next_due(engine: Engine, *, destinations: Collection[str]) -> datetime | None:
    """When the earliest waiting work for these destinations becomes due, if any."""
    if not destinations:
        return None
    when = deliveries.c.next_attempt_at
    with db.reader(engine) as conn:
        firsts = [
            conn.execute(_in_due_order(status, destinations, when).limit(1)).scalar()
            for status in ACTIVE
        ]
    return min((f for f in firsts if f is not None), default=None)


def _with_retries(work: Callable[[], T], tries: int = 5) -> T:
    for attempt in range(tries):
        try:
            return work()
        except DBAPIError as exc:
            if attempt == tries - 1 or _code(exc) not in _RETRYABLE_CODES:
                raise
            time.sleep(0.01 * (attempt + 1))
    raise AssertionError("unreachable")


def _code(exc: DBAPIError) -> object:
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None)  # psycopg
    if sqlstate:
        return sqlstate
    args = getattr(orig, "args", ())
    return args[0] if args else None  # PyMySQL: (code, message)
