"""Delivery health and match quality counts, moved with each settlement (`worker._write`).

Every answer (or decision taken without a request) settles some claims; each settled claim is a
`Fact`: its event's name and source, the outcome and its code, the latency of the request that
carried it, and (once a platform accepted it) the identifiers it carried. `record` adds the facts
to three rollups in the worker's transaction that finishes the work, beside `delivery.tally`:
outcomes by code, a latency histogram in fixed buckets (`BUCKETS_MS`) and identifier counts. The
reports (`reports.health`) read these few rows, never `tracks`, whatever the event count.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection

from firstparty.delivery.outbox import DeliveryStatus, Finish
from firstparty.delivery.track import Sent
from firstparty.destinations.base import Outcome, Rejected, Retry, Skipped
from firstparty.event import Event
from firstparty.identity import match_keys
from firstparty.store import shards
from firstparty.store.models import delivery_latency, delivery_outcomes, match_rollups

# Upper bounds (ms) of the latency buckets; the last bucket has no upper bound.
BUCKETS_MS: tuple[float, ...] = (
    25,
    50,
    100,
    200,
    300,
    500,
    750,
    1000,
    1500,
    2000,
    3000,
    5000,
    10000,
    30000,
)
ALL = "*"  # match_rollups key: every accepted event
CODE_CHARS = 160
MISSING = "(event missing)"


class Result(StrEnum):
    """What one settlement of one delivery was, as the report counts it."""

    DELIVERED = "delivered"
    TEST = "test"  # accepted in the platform's test mode
    ACCEPTED = "accepted"  # accepted; the platform's final word is asked later (confirming)
    RETRIED = "retried"  # refused for now, or no answer: tried again later
    FAILED = "failed"
    SKIPPED = "skipped"


_RESULTS = {
    DeliveryStatus.DELIVERED: Result.DELIVERED,
    DeliveryStatus.TEST: Result.TEST,
    DeliveryStatus.CONFIRMING: Result.ACCEPTED,
    DeliveryStatus.PENDING: Result.RETRIED,
    DeliveryStatus.FAILED: Result.FAILED,
    DeliveryStatus.SKIPPED: Result.SKIPPED,
}
_ACCEPTED = (DeliveryStatus.DELIVERED, DeliveryStatus.TEST, DeliveryStatus.CONFIRMING)


@dataclass(frozen=True)
class Fact:
    """One settled claim, as the rollups count it."""

    source: str
    event_name: str
    result: Result
    code: str = ""
    latency_ms: float | None = None  # set when a request carried it (not on a follow-up)
    keys: frozenset[str] | None = None  # set when the platform accepted it from a send


def bucket(latency_ms: float) -> int:
    """The index of the latency bucket `latency_ms` falls in (upper bounds inclusive)."""
    for index, bound in enumerate(BUCKETS_MS):
        if latency_ms <= bound:
            return index
    return len(BUCKETS_MS)


def shape(reason: str) -> str:
    """A reason as a code: numbers replaced by N, so that '8.2 days old' and '9.1 days old'
    are counted together."""
    text = re.sub(r"\d+(?:\.\d+)?", "N", " ".join(reason.split()))
    return text[:CODE_CHARS]


def code_of(outcome: Outcome, sent: Sent | None) -> str:
    """The code an outcome is counted under: the platform's error code, else the HTTP status
    of the answer, else what kept it from being sent; a skip's reason shape."""
    if isinstance(outcome, Skipped):
        return shape(outcome.reason)
    if not isinstance(outcome, Retry | Rejected):
        return ""
    if outcome.code:
        return outcome.code[:CODE_CHARS]
    if sent is not None and sent.response_status is not None:
        return f"HTTP {sent.response_status}"
    if sent is not None:
        return "no answer (transport)"
    return shape(f"not sent: {outcome.reason}")[:CODE_CHARS]


def facts(
    finishes: Sequence[Finish],
    outcomes: Mapping[str, Outcome],
    events: Mapping[str, Event],
    sent: Sent | None,
) -> list[Fact]:
    """The facts of these finishes (their outcomes by event pk; `sent`: the request, if any)."""
    found = []
    for finish in finishes:
        claim = finish.claim
        outcome = outcomes.get(claim.event_pk)
        if outcome is None:
            continue
        if claim.follow_up and finish.status == DeliveryStatus.CONFIRMING:
            continue  # asked again later: no outcome yet
        event = events.get(claim.event_pk)
        sending = sent is not None and not claim.follow_up
        accepted = sending and finish.status in _ACCEPTED and event is not None
        found.append(
            Fact(
                source=event.source if event else "",
                event_name=event.name if event else MISSING,
                result=_RESULTS[finish.status],
                code=code_of(outcome, sent),
                latency_ms=sent.duration_ms if sending and sent is not None else None,
                keys=match_keys.carried(event) if accepted and event is not None else None,
            )
        )
    return found


def record(conn: Connection, settled: Iterable[tuple[str, Iterable[Fact]]], now: datetime) -> None:
    """Add the facts of these settlements ((destination, facts) pairs) to the rollups of
    `now`'s UTC hour: one upsert per table for the lot."""
    hour = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    outcomes: Counter[tuple[Any, ...]] = Counter()
    latency: Counter[tuple[Any, ...]] = Counter()
    keys: Counter[tuple[Any, ...]] = Counter()
    for destination, found in settled:
        for fact in found:
            where = (hour, destination, fact.source, fact.event_name)
            outcomes[(*where, fact.result.value, fact.code)] += 1
            if fact.latency_ms is not None:
                latency[(*where, bucket(fact.latency_ms))] += 1
            if fact.keys is not None:
                keys[(*where, ALL)] += 1
                for key in fact.keys:
                    keys[(*where, key)] += 1
    shard = shards.of(conn)
    for table, counts in ((delivery_outcomes, outcomes), (delivery_latency, latency)):
        _upsert(conn, table, counts, shard)
    _upsert(conn, match_rollups, keys, shard)


def _upsert(
    conn: Connection, table: sa.Table, counts: Counter[tuple[Any, ...]], shard: int
) -> None:
    """Add to one row per place, in sorted order (concurrent transactions lock alike)."""
    if not counts:
        return
    names = _places(table)
    rows = [
        {**dict(zip(names, place, strict=True)), "shard": shard, "count": n}
        for place, n in sorted(counts.items())
    ]
    conn.execute(_statement(conn.dialect.name, table.name), rows)


def _places(table: sa.Table) -> list[str]:
    return [c.name for c in table.primary_key.columns if c.name != "shard"]


_TABLES = {t.name: t for t in (delivery_outcomes, delivery_latency, match_rollups)}


@functools.cache
def _statement(dialect: str, name: str) -> Any:
    """The upsert adding `count` to one of the tables, built once per dialect."""
    table = _TABLES[name]
    if dialect in ("postgresql", "sqlite"):
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        base = insert(table)
        return base.on_conflict_do_update(
            index_elements=list(table.primary_key.columns),
            set_={"count": table.c.count + base.excluded["count"]},
        )
    base_my = mysql.insert(table)
    return base_my.on_duplicate_key_update(count=table.c.count + base_my.inserted["count"])


def day_of(value: object) -> date:
    """A date, whatever the driver answers (SQLite may give a string)."""
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])
