"""The worker end to end: a real database, real HTTP to a local receiver, nothing mocked."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from firstparty import metrics
from firstparty.delivery import queue, worker
from firstparty.destinations import registry
from firstparty.settings import Settings
from firstparty.store import db
from tests.conftest import settings_for
from tests.delivery.outbox import (
    API_KEY,
    add_events,
    all_settled,
    delivery_rows,
    event_ids,
    eventually,
    fake_destination,
    link_rows,
    make_worker,
    track_rows,
)
from tests.delivery.receiver import Receiver

FAST = {"backoff_base_seconds": 0.01, "backoff_max_seconds": 0.05, "sweep_interval_seconds": 0.1}


def settings_with(url: str, *destinations: dict[str, Any], **delivery: Any) -> Settings:
    return settings_for(url, destinations=list(destinations), delivery={**FAST, **delivery})


async def test_batches_are_delivered_once_logged_and_linked(
    database_url: str, receiver: Receiver
) -> None:
    settings = settings_with(database_url, fake_destination(receiver.url, batch_size=10))
    engine = db.create_engine(database_url)
    pks = add_events(engine, ["fake"], 25)
    work = make_worker(settings, engine)
    await work.drain()
    await work.stop()

    assert sorted(receiver.event_ids()) == sorted(event_ids(engine)[pk] for pk in pks)
    assert len(receiver.seen) == 3  # 10 + 10 + 5
    assert {(r.status, r.attempts) for r in delivery_rows(engine)} == {("delivered", 1)}
    tracks = track_rows(engine)
    assert [t.status for t in tracks] == ["delivered"] * 3
    assert all(t.response_status == 200 and t.duration_ms is not None for t in tracks)
    links = link_rows(engine)
    assert sorted(link.event_pk for link in links) == sorted(pks)
    assert {link.outcome for link in links} == {"delivered"}
    # The api key travels in the URL; the log never shows it.
    assert API_KEY in receiver.seen[0].query
    assert all(API_KEY not in t.url and "[redacted]" in t.url for t in tracks)
    assert all(API_KEY not in json.dumps(t.request) for t in tracks)
    engine.dispose()


async def test_server_errors_are_retried_until_delivered(
    sqlite_engine: Engine, sqlite_url: str, receiver: Receiver
) -> None:
    settings = settings_with(sqlite_url, fake_destination(receiver.url))
    receiver.fail(2, 500)
    add_events(sqlite_engine, ["fake"], 3)
    work = make_worker(settings, sqlite_engine)
    await work.start()
    await eventually(all_settled(sqlite_engine))
    await work.stop()

    assert len(receiver.accepted) == 3
    assert {r.attempts for r in delivery_rows(sqlite_engine)} == {3}
    assert [t.status for t in track_rows(sqlite_engine)] == ["pending", "pending", "delivered"]
    assert [t.attempt for t in track_rows(sqlite_engine)] == [1, 2, 3]


async def test_retry_after_sets_the_next_attempt(
    sqlite_engine: Engine, sqlite_url: str, receiver: Receiver
) -> None:
    settings = settings_with(sqlite_url, fake_destination(receiver.url))
    receiver.fail(1, 429, {"Retry-After": "30"})
    add_events(sqlite_engine, ["fake"], 1)
    work = make_worker(settings, sqlite_engine)
    first = await work.run_once()
    again = await work.run_once()
    await work.stop()
    assert (first, again) == (1, 0)  # not due again before the platform said
    (row,) = delivery_rows(sqlite_engine)
    assert row.status == "pending" and "HTTP 429" in row.last_error
    wait = row.next_attempt_at - row.first_attempt_at
    assert timedelta(seconds=30) <= wait < timedelta(seconds=31)
    assert len(receiver.seen) == 1


async def test_timeouts_are_retryable(
    sqlite_engine: Engine, sqlite_url: str, receiver: Receiver
) -> None:
    settings = settings_with(sqlite_url, fake_destination(receiver.url, timeout_seconds=0.2))
    receiver.delay = 2.0
    add_events(sqlite_engine, ["fake"], 2)
    work = make_worker(settings, sqlite_engine)
    await work.run_once()
    await work.stop()
    rows = delivery_rows(sqlite_engine)
    assert {r.status for r in rows} == {"pending"}
    assert all(r.last_error.startswith("transport: ") for r in rows)
    (track,) = track_rows(sqlite_engine)
    assert track.response_status is None and "Timeout" in track.error


async def test_rejections_fail_with_the_platform_reason(
    sqlite_engine: Engine, sqlite_url: str, receiver: Receiver
) -> None:
    settings = settings_with(sqlite_url, fake_destination(receiver.url))
    pks = add_events(sqlite_engine, ["fake"], 3)
    bad = event_ids(sqlite_engine)[pks[1]]
    receiver.reject[bad] = "invalid currency"
    work = make_worker(settings, sqlite_engine)
    await work.drain()
    await work.stop()
    by_pk = {r.event_pk: r for r in delivery_rows(sqlite_engine)}
    assert by_pk[pks[1]].status == "failed" and by_pk[pks[1]].last_error == "invalid currency"
    assert {by_pk[pks[0]].status, by_pk[pks[2]].status} == {"delivered"}
    assert [t.status for t in track_rows(sqlite_engine)] == ["failed"]
    reasons = {link.event_pk: link.reason for link in link_rows(sqlite_engine)}
    assert reasons[pks[1]] == "invalid currency" and reasons[pks[0]] is None


async def test_an_adapter_that_raises_fails_its_own_work_logged_once_and_counted(
    sqlite_engine: Engine, sqlite_url: str, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    broken = fake_destination(receiver.url, name="broken", raise_in="interpret")
    settings = settings_with(sqlite_url, fake_destination(receiver.url), broken)
    pks = add_events(sqlite_engine, ["fake", "broken"], 3)
    errors = metrics.ADAPTER_ERRORS.labels(destination="broken", step="interpret")
    before = errors._value.get()
    work = make_worker(settings, sqlite_engine)
    await work.drain()
    ends = {(r.destination, r.status) for r in delivery_rows(sqlite_engine)}
    assert ends == {("fake", "delivered"), ("broken", "failed")}
    failed = [r for r in delivery_rows(sqlite_engine) if r.destination == "broken"]
    assert {r.last_error for r in failed} == {
        "adapter error in interpret: RuntimeError: fake adapter drill: interpret raised"
    }
    assert sorted(e["id"] for e in receiver.accepted) == sorted(pks * 2)  # it was sent, once
    tracebacks = [r for r in caplog.records if r.exc_info and "broken" in r.getMessage()]
    assert len(tracebacks) == 1  # one request of three events: one traceback
    assert errors._value.get() == before + 1


async def test_sends_in_a_platforms_test_mode_are_recorded_as_test(
    sqlite_engine: Engine, sqlite_url: str, receiver: Receiver
) -> None:
    testing = fake_destination(receiver.url, test_event_code="TEST123")
    settings = settings_with(sqlite_url, testing)
    add_events(sqlite_engine, ["fake"], 2)
    await make_worker(settings, sqlite_engine).drain()
    assert {r.status for r in delivery_rows(sqlite_engine)} == {"test"}
    assert [t.status for t in track_rows(sqlite_engine)] == ["test"]
    assert json.loads(receiver.seen[0].body)["test_event_code"] == "TEST123"


async def test_a_whole_request_refused_fails_every_event(
    sqlite_engine: Engine, sqlite_url: str, receiver: Receiver
) -> None:
    settings = settings_with(sqlite_url, fake_destination(receiver.url))
    receiver.fail(1, 400)
    add_events(sqlite_engine, ["fake"], 2)
    work = make_worker(settings, sqlite_engine)
    await work.drain()
    await work.stop()
    rows = delivery_rows(sqlite_engine)
    assert {r.status for r in rows} == {"failed"}
    assert all("HTTP 400" in r.last_error and "scripted 400" in r.last_error for r in rows)


async def test_exhausted_attempts_fail_the_work(
    sqlite_engine: Engine, sqlite_url: str, receiver: Receiver
) -> None:
    settings = settings_with(sqlite_url, fake_destination(receiver.url, max_attempts=2))
    receiver.fail(5, 503)
    add_events(sqlite_engine, ["fake"], 1)
    work = make_worker(settings, sqlite_engine)
    await work.start()
    await eventually(all_settled(sqlite_engine, "failed"))
    await work.stop()
    (row,) = delivery_rows(sqlite_engine)
    assert row.attempts == 2 and row.last_error.startswith("gave up after 2 attempts: HTTP 503")
    assert len(receiver.seen) == 2


async def test_dry_run_records_the_request_and_sends_nothing(
    sqlite_engine: Engine, sqlite_url: str, receiver: Receiver
) -> None:
    settings = settings_with(sqlite_url, fake_destination(receiver.url, dry_run=True))
    add_events(sqlite_engine, ["fake"], 2)
    work = make_worker(settings, sqlite_engine)
    await work.drain()
    await work.stop()
    assert receiver.seen == []
    assert {(r.status, r.last_error) for r in delivery_rows(sqlite_engine)} == {
        ("skipped", "dry_run")
    }
    (track,) = track_rows(sqlite_engine)
    assert track.status == "skipped" and len(track.request["events"]) == 2
    assert API_KEY not in track.url


async def test_requests_settled_together_are_logged_in_one_statement_each_linked_right(
    database_url: str, receiver: Receiver
) -> None:
    """One request per event (a webhook): the requests the recorder writes together go to
    PostgreSQL and MariaDB in one INSERT (ids returned in order) and their links in one more, not
    two round trips a request (the worker settled about 660 a second on PostgreSQL that way);
    each request still names the event it carried."""
    import sqlalchemy as sa

    engine = db.create_engine(database_url)
    settings = settings_with(database_url, fake_destination(receiver.url, batch_size=1))
    add_events(engine, ["fake"], 60)
    inserts: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO TRACKS"):
            inserts.append(statement)

    sa.event.listen(engine, "before_cursor_execute", seen)
    work = make_worker(settings, engine)
    await work.drain()
    await work.stop()
    tracks, links = track_rows(engine), link_rows(engine)
    assert len(tracks) == 60 and len(links) == 60 and len(receiver.seen) == 60
    carried = {t.id: t.request["events"][0]["id"] for t in tracks}
    assert all(t.request_bytes == len(json.dumps(t.request, separators=(",", ":"))) for t in tracks)
    assert all(carried[link.track_id] == link.event_pk for link in links)
    assert {r.status for r in delivery_rows(engine)} == {"delivered"}
    # SQLAlchemy writes SQLite's a row at a time (no round trip there): its RETURNING order is
    # not guaranteed for many rows.
    if engine.dialect.name != "sqlite":
        assert len(inserts) < 20, f"{len(inserts)} INSERTs for 60 requests"
    engine.dispose()


async def test_too_old_events_are_skipped_with_a_reason(
    sqlite_engine: Engine, sqlite_url: str, receiver: Receiver
) -> None:
    dest = fake_destination(receiver.url, max_event_age_days=7)
    settings = settings_with(sqlite_url, dest)
    add_events(sqlite_engine, ["fake"], 1, occurred_at=datetime.now(UTC) - timedelta(days=8))
    work = make_worker(settings, sqlite_engine)
    await work.drain()
    await work.stop()
    (row,) = delivery_rows(sqlite_engine)
    assert row.status == "skipped" and "older than 7 days" in row.last_error
    assert receiver.seen == [] and track_rows(sqlite_engine) == []


async def test_tokens_are_fetched_once_cached_and_redacted(
    sqlite_engine: Engine, sqlite_url: str, receiver: Receiver
) -> None:
    dest = fake_destination(receiver.url, token_url=f"{receiver.url}/token", batch_size=2)
    settings = settings_with(sqlite_url, dest)
    add_events(sqlite_engine, ["fake"], 6)
    work = make_worker(settings, sqlite_engine, claim_limit=2)
    await work.drain()
    await work.stop()
    assert receiver.token_requests == 1
    assert {s.headers.get("Authorization") for s in receiver.seen if s.path == "/events"} == {
        "Bearer tok-1-secret"
    }
    tracks = track_rows(sqlite_engine)
    assert tracks[0].url.endswith("/token") and tracks[0].request == {"client_secret": "[redacted]"}
    assert all("tok-1-secret" not in (t.response_body or "") for t in tracks)
    assert {r.status for r in delivery_rows(sqlite_engine)} == {"delivered"}


async def test_webhook_signs_each_event(
    sqlite_engine: Engine, sqlite_url: str, receiver: Receiver
) -> None:
    secret = "hook-secret-0123456789"
    hook = {"name": "hook", "type": "webhook", "url": f"{receiver.url}/hook", "secret": secret}
    settings = settings_with(sqlite_url, hook)
    pks = add_events(sqlite_engine, ["hook"], 2)
    work = make_worker(settings, sqlite_engine)
    await work.drain()
    await work.stop()
    assert len(receiver.seen) == 2
    for seen in receiver.seen:
        expected = hmac.new(secret.encode(), seen.body, hashlib.sha256).hexdigest()
        assert seen.headers["X-Firstparty-Signature"] == f"sha256={expected}"
        assert seen.headers["X-Firstparty-Event-Id"] == seen.json()["event_id"]
    assert sorted(e["id"] for e in receiver.accepted) == sorted(pks)
    assert {r.status for r in delivery_rows(sqlite_engine)} == {"delivered"}


async def test_embedded_worker_wakes_on_notify(
    sqlite_engine: Engine, sqlite_url: str, receiver: Receiver
) -> None:
    # A minute-long poll: only the wake-up can deliver within the bound below.
    settings = settings_with(sqlite_url, fake_destination(receiver.url), sweep_interval_seconds=60)
    notifier = queue.make_queue(settings)
    embedded = worker.Worker(
        settings=settings,
        engine=sqlite_engine,
        adapters=registry.adapters(settings.destinations),
        queue=notifier,
    )
    await embedded.start()
    await asyncio.sleep(0.2)  # let the lanes go idle
    add_events(sqlite_engine, ["fake"], 3)
    await notifier.notify()
    await eventually(all_settled(sqlite_engine), timeout=10)
    await embedded.stop()
    assert len(receiver.accepted) == 3


async def test_a_lane_sends_at_most_batches_in_flight_at_once(
    sqlite_engine: Engine, sqlite_url: str, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One-event batches of a claim wait for a slot instead of all starting together."""
    monkeypatch.setattr(worker, "BATCHES_IN_FLIGHT", 3)
    settings = settings_with(sqlite_url, fake_destination(receiver.url, batch_size=1))
    pks = add_events(sqlite_engine, ["fake"], 10)
    work = make_worker(settings, sqlite_engine)
    receiver.hold = asyncio.Event()
    round_ = asyncio.create_task(work.run_once())
    await eventually(lambda: receiver.held == 3)
    await asyncio.sleep(0.2)  # had the others started, they would have reached the receiver
    assert receiver.held == 3
    receiver.hold.set()
    assert await round_ == 10
    await work.start()  # lanes retry what the held requests left behind
    await eventually(all_settled(sqlite_engine))
    await work.stop()
    sent = {e["event_id"] for seen in receiver.seen for e in seen.json()["events"]}
    assert sent == {event_ids(sqlite_engine)[pk] for pk in pks}  # (`accepted` reads the last)
