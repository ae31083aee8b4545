"""Alert rules through the database with a controlled clock and a local webhook receiver: each
rule fires on figures that cross it and resolves when they recover, one message each, once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from firstparty import metrics
from firstparty.alerts import notify, state
from firstparty.alerts.loop import Evaluator
from firstparty.destinations import registry
from firstparty.destinations.book import DestinationBook
from firstparty.settings import Settings
from firstparty.store import db
from firstparty.store.models import alert_notices
from tests import factories
from tests.alerts import rows
from tests.alerts.rows import Clock
from tests.conftest import settings_for
from tests.fakes.server import Reply
from tests.fakes.webhook import FakeWebhook
from tests.web.test_reading import writer

SECRET = "webhook-signing-secret-0123456789"


@pytest.fixture
def receiver() -> Iterator[FakeWebhook]:
    with FakeWebhook(secret=SECRET) as fake:
        yield fake


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = db.create_engine(database_url)
    yield engine
    engine.dispose()


def _settings(database_url: str, receiver: FakeWebhook, **rules: Any) -> Settings:
    alerts = {"webhook": {"url": receiver.url + "/hook", "secret": SECRET}, **rules}
    return settings_for(database_url, alerts=alerts)


def _round(evaluator: Evaluator) -> Any:
    return asyncio.run(_once(evaluator))


async def _once(evaluator: Evaluator) -> Any:
    try:
        return await evaluator.round()
    finally:
        await evaluator.close()


def _texts(receiver: FakeWebhook) -> list[str]:
    return [m["text"].split(":")[0] for m in receiver.messages]


def test_delivery_success_fires_and_resolves(
    database_url: str, engine: Engine, receiver: FakeWebhook
) -> None:
    settings, clock = _settings(database_url, receiver), Clock()
    rows.add_requests(engine, "meta", delivered=80, failed=20, at=clock.now)
    _round(Evaluator(settings=settings, engine=engine, clock=clock))
    assert _texts(receiver) == ["[FIRING] firstparty delivery_success meta"]
    assert "80.0 % of 100 requests" in receiver.messages[0]["alert"]["detail"]
    clock.advance(minutes=31)  # the bad window is past and the minimum interval too
    rows.add_requests(engine, "meta", delivered=50, failed=0, at=clock.now)
    _round(Evaluator(settings=settings, engine=engine, clock=clock))
    assert _texts(receiver)[1:] == ["[RESOLVED] firstparty delivery_success meta"]
    assert receiver.messages[1]["alert"]["state"] == "resolved"


def test_queue_lag_fires_and_resolves(
    database_url: str, engine: Engine, receiver: FakeWebhook
) -> None:
    settings, clock = _settings(database_url, receiver), Clock()
    evaluator = Evaluator(settings=settings, engine=engine, clock=clock)
    rows.add_due_delivery(engine, "meta", due=clock.now)
    clock.advance(seconds=300)
    _round(evaluator)
    assert receiver.messages == []  # exactly at the threshold: not yet
    clock.advance(seconds=1)
    _round(evaluator)
    assert _texts(receiver) == ["[FIRING] firstparty queue_lag outbox"]
    rows.finish_deliveries(engine)
    clock.advance(minutes=30)
    _round(evaluator)
    assert _texts(receiver)[1:] == ["[RESOLVED] firstparty queue_lag outbox"]


def test_a_source_silent_against_last_week_fires_and_resolves(
    database_url: str, engine: Engine, receiver: FakeWebhook
) -> None:
    settings, clock = _settings(database_url, receiver), Clock()
    evaluator = Evaluator(settings=settings, engine=engine, clock=clock)
    rows.add_events(engine, "www", 40, at=clock.now - timedelta(days=7, minutes=10))
    rows.add_events(engine, "www", 19, at=clock.now - timedelta(minutes=10))
    rows.add_events(engine, "crm", 5, at=clock.now - timedelta(days=7, minutes=10))
    _round(evaluator)
    assert _texts(receiver) == ["[FIRING] firstparty source_silent www"]  # crm: not its hours
    rows.add_events(engine, "www", 1, at=clock.now)  # 20 of 40: 50 %, not below
    clock.advance(minutes=30, seconds=-1)
    rows.add_events(engine, "www", 20, at=clock.now - timedelta(minutes=5))
    rows.add_events(engine, "www", 40, at=clock.now - timedelta(days=7, minutes=5))
    _round(evaluator)
    assert receiver.messages[1:] == []  # recovered inside the minimum interval: nothing yet
    clock.advance(seconds=1)
    _round(evaluator)
    assert _texts(receiver)[1:] == ["[RESOLVED] firstparty source_silent www"]


def test_server_errors_counted_by_the_process_fire_and_resolve(
    database_url: str, engine: Engine, receiver: FakeWebhook
) -> None:
    settings, clock = _settings(database_url, receiver), Clock()
    evaluator = Evaluator(settings=settings, engine=engine, clock=clock)
    metrics.INTERNAL_ERRORS.labels("RuntimeError").inc(11)
    _round(evaluator)
    assert _texts(receiver) == ["[FIRING] firstparty server_errors server"]
    assert receiver.messages[0]["alert"]["detail"].startswith("11 answers 500")
    clock.advance(minutes=30)
    _round(evaluator)
    assert _texts(receiver)[1:] == ["[RESOLVED] firstparty server_errors server"]


def test_a_misconfigured_destination_fires_and_resolves_when_fixed(
    database_url: str, engine: Engine, receiver: FakeWebhook
) -> None:
    clock = Clock()
    broken = _settings(database_url, receiver).model_copy(
        update={"misconfigured": {"meta": ["META_TOKEN"]}}
    )
    _round(Evaluator(settings=broken, engine=engine, clock=clock))
    assert _texts(receiver) == ["[FIRING] firstparty destination_setup meta"]
    assert "META_TOKEN" in receiver.messages[0]["text"]
    clock.advance(minutes=30)
    _round(Evaluator(settings=_settings(database_url, receiver), engine=engine, clock=clock))
    assert _texts(receiver)[1:] == ["[RESOLVED] firstparty destination_setup meta"]


def test_two_evaluators_on_one_database_send_each_message_once(
    database_url: str, engine: Engine, receiver: FakeWebhook
) -> None:
    settings, clock = _settings(database_url, receiver), Clock()
    first = Evaluator(settings=settings, engine=engine, clock=clock)
    second = Evaluator(settings=settings, engine=engine, clock=clock)
    rows.add_requests(engine, "meta", delivered=0, failed=30, at=clock.now)

    async def both() -> list[Any]:
        try:
            return list(await asyncio.gather(first.round(), second.round()))
        finally:
            await first.close()
            await second.close()

    assert sorted(r.evaluated for r in asyncio.run(both())) == [False, True]
    # The lease lapses (a process died): the other evaluates, and knows it was announced.
    clock.advance(seconds=settings.alerts.lease_seconds)
    assert _round(Evaluator(settings=settings, engine=engine, clock=clock)).evaluated
    assert _texts(receiver) == ["[FIRING] firstparty delivery_success meta"]
    clock.advance(minutes=31)
    rows.add_requests(engine, "meta", delivered=30, failed=0, at=clock.now)
    asyncio.run(both_again(settings, engine, clock))
    assert _texts(receiver)[1:] == ["[RESOLVED] firstparty delivery_success meta"]


async def both_again(settings: Settings, engine: Engine, clock: Clock) -> None:
    """Two fresh processes (a restart), each past the lease, racing for the resolve."""
    evaluators = [Evaluator(settings=settings, engine=engine, clock=clock) for _ in range(2)]
    try:
        await asyncio.gather(*(e.round() for e in evaluators))
        clock.advance(seconds=settings.alerts.lease_seconds)
        await asyncio.gather(*(e.round() for e in evaluators))
    finally:
        for evaluator in evaluators:
            await evaluator.close()


def test_a_flapping_rule_sends_nothing_inside_the_minimum_interval(
    database_url: str, engine: Engine, receiver: FakeWebhook
) -> None:
    settings, clock = _settings(database_url, receiver), Clock()
    evaluator = Evaluator(settings=settings, engine=engine, clock=clock)
    for minute in range(29):  # fails, recovers, fails... every minute for 29 minutes
        rows.add_requests(engine, "meta", delivered=20 * (minute % 2), failed=20, at=clock.now)
        _round(evaluator)
        clock.advance(minutes=1, seconds=1)
    assert _texts(receiver) == ["[FIRING] firstparty delivery_success meta"]
    with engine.connect() as conn:
        assert conn.execute(sa.select(alert_notices.c.state)).scalars().all() == ["firing"]


def test_a_failed_webhook_is_retried_at_the_next_round(
    database_url: str, engine: Engine, receiver: FakeWebhook
) -> None:
    settings, clock = _settings(database_url, receiver), Clock()
    settings = settings.model_copy(update={"misconfigured": {"meta": ["META_TOKEN"]}})
    evaluator = Evaluator(settings=settings, engine=engine, clock=clock)
    receiver.script(Reply(503))
    outcome = _round(evaluator)
    assert (outcome.sent, outcome.failed, receiver.messages) == (0, 1, [])
    clock.advance(minutes=1)
    outcome = _round(evaluator)
    assert (outcome.sent, outcome.failed) == (1, 0)
    assert _texts(receiver) == ["[FIRING] firstparty destination_setup meta"]


def test_an_unreachable_webhook_does_not_stop_the_round(
    database_url: str, engine: Engine, receiver: FakeWebhook
) -> None:
    settings = settings_for(
        database_url, alerts={"webhook": {"url": "http://127.0.0.1:9/hook"}}
    ).model_copy(update={"misconfigured": {"meta": ["META_TOKEN"]}})
    outcome = _round(Evaluator(settings=settings, engine=engine, clock=Clock()))
    assert (outcome.evaluated, outcome.failed) == (True, 1)
    assert [a.state.value for a in state.listing(engine)] == ["firing"]


def test_the_signature_is_hmac_sha256_of_the_body(
    database_url: str, engine: Engine, receiver: FakeWebhook
) -> None:
    settings = _settings(database_url, receiver).model_copy(
        update={"misconfigured": {"meta": ["META_TOKEN"]}}
    )
    _round(Evaluator(settings=settings, engine=engine, clock=Clock()))
    (request,) = receiver.requests
    assert request.headers["x-firstparty-signature"] == notify.signature(SECRET, request.body)
    assert receiver.messages[0]["alert"]["rule"] == "destination_setup"


def test_a_destination_in_test_mode_fires_through_the_destination_book(
    database_url: str, engine: Engine, receiver: FakeWebhook
) -> None:
    meta = {**factories.META_CAPI, "test_event_code": "TEST4242"}
    settings = _settings(database_url, receiver).model_copy(
        update={"destinations": registry.parse_all([meta, factories.TIKTOK_EVENTS])}
    )
    book = DestinationBook(settings=settings, engine=engine)
    book.reload()
    _round(Evaluator(settings=settings, engine=engine, book=book, clock=Clock()))
    assert [m["text"] for m in receiver.messages] == [
        "[FIRING] firstparty destination_setup meta: in test mode (test_event_code=TEST4242)"
    ]


def test_a_failing_destination_that_stops_sending_keeps_firing(
    database_url: str, engine: Engine, receiver: FakeWebhook
) -> None:
    settings = _settings(database_url, receiver).model_copy(
        update={"destinations": registry.parse_all([factories.META_CAPI])}
    )
    clock = Clock()
    evaluator = Evaluator(settings=settings, engine=engine, clock=clock)
    rows.add_requests(engine, "meta", delivered=0, failed=25, at=clock.now)
    _round(evaluator)
    clock.advance(hours=2)  # backing off: no request in the window, no verdict
    _round(evaluator)
    assert _texts(receiver) == ["[FIRING] firstparty delivery_success meta"]
    assert [a.state.value for a in state.listing(engine)] == ["firing"]


def test_a_round_reads_its_figures_while_a_writer_holds_the_lock(
    sqlite_url: str, receiver: FakeWebhook
) -> None:
    """On SQLite the figures are read in a reader's transaction: a round's counts neither wait
    for ingest's write lock nor hold it (they began IMMEDIATE, like a write, until issue 14)."""
    engine = db.create_engine(sqlite_url)
    settings, clock = _settings(sqlite_url, receiver), Clock()
    rows.add_events(engine, "www", 3, at=clock.now - timedelta(minutes=10))
    evaluator = Evaluator(settings=settings, engine=engine, clock=clock)
    with writer(sqlite_url):
        seen = asyncio.run(asyncio.wait_for(evaluator.observe(clock.now), timeout=10))
    assert seen.volumes["www"].now == 3
    asyncio.run(evaluator.close())
    engine.dispose()
