"""Claims on every engine: concurrent claimers never share a row; expired leases come back."""

from __future__ import annotations

import concurrent.futures
import secrets
import threading
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from firstparty.delivery import outbox
from firstparty.store import db
from tests.conftest import settings_for
from tests.delivery.outbox import add_events, delivery_rows, make_worker
from tests.web.test_reading import writer


def test_concurrent_claimers_never_get_the_same_row(database_url: str) -> None:
    engine = db.create_engine(database_url, pool_size=8)
    add_events(engine, ["a", "b"], 100)
    taken: list[list[int]] = [[] for _ in range(4)]
    barrier = threading.Barrier(4)

    def claimer(index: int) -> None:
        barrier.wait()
        while got := outbox.claim(
            engine, destinations={"a", "b"}, now=datetime.now(UTC), lease_seconds=60, limit=7
        ):
            taken[index] += [c.id for c in got]

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    everything = [i for ids in taken for i in ids]
    assert len(everything) == len(set(everything)) == 200
    assert {(r.status, r.attempts) for r in delivery_rows(engine)} == {("inflight", 1)}
    engine.dispose()


def test_an_expired_lease_is_claimed_again_and_guards_the_old_claim(database_url: str) -> None:
    engine = db.create_engine(database_url)
    add_events(engine, ["a"], 1)
    now = datetime.now(UTC)
    (first,) = outbox.claim(engine, destinations={"a"}, now=now, lease_seconds=30, limit=10)
    assert (
        outbox.claim(
            engine, destinations={"a"}, now=now + timedelta(seconds=29), lease_seconds=30, limit=10
        )
        == []
    )
    # The first worker died (kill -9): after the lease the sweeper claim takes the row again.
    later = now + timedelta(seconds=31)
    (second,) = outbox.claim(engine, destinations={"a"}, now=later, lease_seconds=30, limit=10)
    assert (second.id, second.attempt, first.attempt) == (first.id, 2, 1)
    assert second.first_attempt_at == first.first_attempt_at
    with engine.begin() as conn:  # the late first worker cannot overwrite the newer claim
        outbox.finish(conn, [outbox.Finish(first, "failed", later, "stale")], later)
    assert delivery_rows(engine)[0].status == "inflight"
    with engine.begin() as conn:
        outbox.finish(conn, [outbox.Finish(second, "delivered", later)], later)
    assert delivery_rows(engine)[0].status == "delivered"
    engine.dispose()


def test_a_heartbeat_extends_only_our_claims_and_a_release_hands_them_back(
    database_url: str,
) -> None:
    engine = db.create_engine(database_url)
    add_events(engine, ["a"], 2)
    now = datetime.now(UTC)
    mine = outbox.claim(engine, destinations={"a"}, now=now, lease_seconds=10, limit=10)
    # A newer claim of the second row (its lease ran out): neither call may touch it.
    later = now + timedelta(seconds=11)
    (theirs,) = outbox.claim(engine, destinations={"a"}, now=later, lease_seconds=10, limit=1)
    ours = [c for c in mine if c.id != theirs.id]
    assert outbox.extend(engine, mine, until=later + timedelta(seconds=10)) == 1
    assert outbox.claim(engine, destinations={"a"}, now=later, lease_seconds=10, limit=10) == []
    outbox.release(engine, mine, now=later)
    rows = {r.id: r for r in delivery_rows(engine)}
    assert (rows[ours[0].id].status, rows[ours[0].id].attempts) == ("pending", 0)
    assert (rows[theirs.id].status, rows[theirs.id].attempts) == ("inflight", 2)
    (again,) = outbox.claim(engine, destinations={"a"}, now=later, lease_seconds=10, limit=10)
    assert (again.id, again.attempt) == (ours[0].id, 1)  # due at once, the attempt not spent
    engine.dispose()


def test_only_due_work_of_known_destinations_is_claimed(sqlite_url: str) -> None:
    engine = db.create_engine(sqlite_url)
    add_events(engine, ["a", "gone"], 2)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE deliveries SET next_attempt_at = :t WHERE id = 1"),
            {"t": (now + timedelta(hours=1)).replace(tzinfo=None)},
        )
    got = outbox.claim(engine, destinations={"a"}, now=now, lease_seconds=60, limit=10)
    assert [c.destination for c in got] == ["a"]
    assert outbox.next_due(engine, destinations={"a"}) is not None
    engine.dispose()


def test_a_long_error_is_kept_cut_so_its_index_entry_fits(database_url: str) -> None:
    """ix_deliveries_failed holds last_error: PostgreSQL refuses a B-tree entry over 2,704 bytes
    (an UPDATE that would fail and leave the work in flight); the error is cut to 512 characters."""
    engine = db.create_engine(database_url)
    add_events(engine, ["a"], 1)
    now = datetime.now(UTC)
    (claim,) = outbox.claim(engine, destinations={"a"}, now=now, lease_seconds=30, limit=1)
    error = "HTTP 400: " + secrets.token_hex(4_000)  # 8,010 characters, incompressible
    with engine.begin() as conn:
        outbox.finish(conn, [outbox.Finish(claim, "failed", now, error)], now)
    (row,) = delivery_rows(engine)
    assert (row.status, row.last_error) == ("failed", error[:512])
    engine.dispose()


def test_the_workers_reads_go_on_while_a_writer_holds_the_lock(sqlite_url: str) -> None:
    """The worker's pure reads (its work's events, the next due time, the queue lag) take no
    write lock on SQLite: they neither wait for ingest's commits nor hold them back."""
    engine = db.create_engine(sqlite_url)
    (pk,) = add_events(engine, ["a"], 1)
    made = make_worker(settings_for(sqlite_url), engine)
    now = datetime.now(UTC) + timedelta(seconds=1)
    with writer(sqlite_url), concurrent.futures.ThreadPoolExecutor() as pool:
        reads = [
            pool.submit(made._load, [pk]),
            pool.submit(outbox.next_due, engine, destinations={"a"}),
            pool.submit(outbox.oldest_due, engine, now=now),
        ]
        loaded, due, oldest = (read.result(timeout=10) for read in reads)
    assert list(loaded) == [pk] and due is not None and oldest == due
    engine.dispose()


def test_a_claim_takes_the_oldest_due_across_statuses_from_the_index(database_url: str) -> None:
    """Pending work, expired leases and confirmations are each read in order from the
    (status, next_attempt_at) index and merged: the claim still takes the oldest due first,
    whatever their status, and `next_due` is the earliest of all."""
    engine = db.create_engine(database_url)
    add_events(engine, ["a"], 6)
    now = datetime.now(UTC).replace(microsecond=0)
    plan = {  # id: (status, seconds from now)
        1: ("pending", -5), 2: ("pending", -1), 3: ("inflight", -3),
        4: ("confirming", -4), 5: ("confirming", -2), 6: ("pending", 60),
    }  # fmt: skip
    with engine.begin() as conn:
        for row_id, (status, seconds) in plan.items():
            conn.execute(
                sa.update(outbox.deliveries)
                .where(outbox.deliveries.c.id == row_id)
                .values(status=status, next_attempt_at=now + timedelta(seconds=seconds))
            )
    assert outbox.next_due(engine, destinations={"a"}) == now - timedelta(seconds=5)
    got = outbox.claim(engine, destinations={"a"}, now=now, lease_seconds=60, limit=3)
    assert [c.id for c in got] == [1, 4, 3]
    rest = outbox.claim(engine, destinations={"a"}, now=now, lease_seconds=60, limit=10)
    assert [c.id for c in rest] == [5, 2]
    assert outbox.next_due(engine, destinations={"a"}) == now + timedelta(seconds=60)
    engine.dispose()
