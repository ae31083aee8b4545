"""What an index over random keys costs ingest as `events` grows: `python bench/index_cost.py`.

Stores events on SQLite the way the server's group writer does (`db.bulk_insert` of 64 rows a
transaction, `synchronous=FULL`, the WAL checkpointed every second apart from the commits) into
two databases made by the migrations: the schema before `0025_event_id_key` (a unique
(source, event_id) and an index on event_id) and the newest (one unique (event_id, source)).
Event ids are random UUIDs, as fp.js and the Segment SDKs send them (`--ids sequential`: g0,
g1, ...). At each stretch it prints, for both, the CPU time per event of the inserts, commits
and checkpoints (this process's user + system time: steady whatever else the machine runs) and
the bytes written to storage per event, then the newest schema's share of the older one's.
Only `events` is written (the outbox, visitors and rollups are what they were): the figures are
the table's own, not the server's. Default 500,000 events (about two minutes); the README quotes
`--events 2000000`.

`--foreign-commits`: before each group another connection commits a one-row write, as the
delivery worker (its own process, or the server's embedded one) commits between the writer's
transactions; SQLite then empties the writer's page cache at its next transaction (pager.c,
pagerBeginReadTransaction: `if( rc!=SQLITE_OK || changed ) pager_reset(pPager)`), and every
page the insert walks is read again. Its own CPU is left out of the figures.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import growth  # bench/growth.py: the bytes a process wrote to storage
import sqlalchemy as sa

from firstparty.ids import new_id
from firstparty.store import db, migrate
from firstparty.store.models import alert_lease, events

BEFORE, NEWEST = "0024_request_bytes", "head"
_NOW = datetime.now(UTC)
GROUP, STRETCH = 64, 1563  # groups a stretch: 100,032 events
USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36"
)


def rows(first: int, sequential: bool) -> list[dict[str, Any]]:
    """GROUP events as the writer stores a server source's (hashes and answers included)."""
    now = datetime.now(UTC)
    made = []
    for n in range(first, first + GROUP):
        event_id = f"g{n}" if sequential else str(uuid.uuid4())
        pk, user = new_id(), f"u{n * 7919 % 50_000}"
        context = {"ip": f"198.51.100.{n % 250}", "user_agent": USER_AGENT}
        request = {"type": "track", "name": "Lead", "event_id": event_id, "user_id": user,
                   "url": f"https://www.example.test/p/{n % 100}", "context": context,
                   "properties": {"value": 19.0, "currency": "USD"}}  # fmt: skip
        made.append(
            {"id": pk, "source": "crm", "event_id": event_id, "type": "track", "name": "Lead",
             "occurred_at": now, "received_at": now, "visitor_id": None, "user_id": user,
             "request": request, "response": {"ok": True, "id": pk, "event_id": event_id},
             "user": {}, "context": context, "consent": {}, "bot": None, "converted": False}
        )  # fmt: skip
    return made


def cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_SELF)
    return used.ru_utime + used.ru_stime


def stretches(
    path: Path, revision: str, total: int, sequential: bool, foreign: bool = False
) -> Iterator[tuple[int, float, float]]:
    """(events stored, CPU µs and bytes written per event) after each STRETCH of groups stored
    in a new database at `revision`."""
    engine = db.create_engine(f"sqlite:///{path}", background_checkpoints=True)
    migrate.upgrade(engine, revision)
    other = engine.connect() if foreign else None
    checked, stored = time.monotonic(), 0
    try:
        while stored < total:
            spent, before = 0.0, growth.written_bytes(os.getpid())
            for _ in range(STRETCH):
                group = rows(stored, sequential)
                if other is not None:
                    _foreign_commit(other, stored)
                began = cpu()
                with engine.begin() as conn:
                    db.bulk_insert(conn, events, group, ignore=True, key="id")
                if time.monotonic() - checked >= 1.0:
                    db.checkpoint(engine)
                    checked = time.monotonic()
                spent += cpu() - began
                stored += GROUP
            count = STRETCH * GROUP
            yield stored, spent / count * 1e6, (growth.written_bytes(os.getpid()) - before) / count
    finally:
        if other is not None:
            other.close()
        engine.dispose()


def _foreign_commit(conn: sa.Connection, n: int) -> None:
    """Another connection's one-row transaction (the worker's, say)."""
    with conn.begin():
        conn.execute(sa.delete(alert_lease))
        conn.execute(sa.insert(alert_lease).values(name="bench", holder=f"w{n}", expires_at=_NOW))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--ids", choices=("uuid", "sequential"), default="uuid")
    parser.add_argument("--foreign-commits", action="store_true")
    args = parser.parse_args()
    sequential = args.ids == "sequential"
    with tempfile.TemporaryDirectory() as tmp:
        measured = {
            revision: list(
                stretches(
                    Path(tmp) / f"{name}.db",
                    revision,
                    args.events,
                    sequential,
                    args.foreign_commits,
                )
            )
            for name, revision in (("before", BEFORE), ("newest", NEWEST))
        }
    extra = " and a foreign commit before each" if args.foreign_commits else ""
    title = f"bench/index_cost: events on SQLite, {args.ids} event ids, groups of {GROUP}"
    print(f"{title}{extra}")
    print(f"{'stored':>10}  {'CPU µs/event':>20}  {'bytes written/event':>24}  newest/before")
    both = f"{'before':>9} {'newest':>10}  {'before':>11} {'newest':>12}"
    print(f"{'':>10}  {both}  {'CPU':>5} {'bytes':>6}")
    for (stored, *old), (_, *new) in zip(measured[BEFORE], measured[NEWEST], strict=True):
        print(
            f"{stored:>10,}  {old[0]:>9.1f} {new[0]:>10.1f}  "
            f"{old[1]:>11,.0f} {new[1]:>12,.0f}  {new[0] / old[0]:>5.0%} {new[1] / old[1]:>6.0%}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
