"""Claiming due work from the outbox with a lease, and finishing it with a guard.

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
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from firstparty.store import db
from firstparty.store.models import deliveries

ACTIVE = ("pending", "inflight")
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


@dataclass(frozen=True)
class Finish:
    """How a claimed delivery ends this attempt."""

    claim: Claim
    status: str  # delivered | skipped | failed | pending (retry at next_attempt_at)
    next_attempt_at: datetime
    last_error: str | None = None


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
        due = (
            sa.select(d.id, d.event_pk, d.destination, d.attempts, d.first_attempt_at)
            .where(d.status.in_(ACTIVE), d.next_attempt_at <= now)
            .where(d.destination.in_(sorted(destinations)))
            .order_by(d.next_attempt_at)
            .limit(limit)
        )
        rows = conn.execute(db.skip_locked(due, conn)).all()
        if not rows:
            return []
        conn.execute(
            sa.update(deliveries)
            .where(d.id.in_([r.id for r in rows]))
            .values(
                status="inflight",
                attempts=d.attempts + 1,
                next_attempt_at=now + timedelta(seconds=lease),
                first_attempt_at=sa.func.coalesce(d.first_attempt_at, now),
                updated_at=now,
            )
        )
    return [
        Claim(r.id, r.event_pk, r.destination, r.attempts + 1, r.first_attempt_at or now)
        for r in rows
    ]


def finish(conn: Connection, finishes: Sequence[Finish], now: datetime) -> None:
    """Record the end of these attempts, each only if the claim is still ours."""
    if not finishes:
        return
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
                (f.status, when(f.next_attempt_at), f.last_error, at, f.claim.id, f.claim.attempt)
                for f in finishes
            ],
        )
        return
    d = deliveries.c
    guarded = (
        sa.update(deliveries)
        .where(
            d.id == sa.bindparam("b_id"),
            d.status == "inflight",
            d.attempts == sa.bindparam("b_attempt"),
        )
        .values(
            status=sa.bindparam("b_status"),
            next_attempt_at=sa.bindparam("b_next"),
            last_error=sa.bindparam("b_error"),
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
            }
            for f in finishes
        ],
    )


_FINISH_SQL = (
    "UPDATE deliveries SET status = {p}, next_attempt_at = {p}, last_error = {p},"
    " updated_at = {p} WHERE deliveries.id = {p} AND deliveries.status = 'inflight'"
    " AND deliveries.attempts = {p}"
)


def next_due(engine: Engine, *, destinations: Collection[str]) -> datetime | None:
    """When the earliest waiting work for these destinations becomes due, if any."""
    if not destinations:
        return None
    d = deliveries.c
    with engine.connect() as conn:
        value: datetime | None = conn.execute(
            sa.select(sa.func.min(d.next_attempt_at)).where(
                d.status.in_(ACTIVE), d.destination.in_(sorted(destinations))
            )
        ).scalar()
    return value


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
