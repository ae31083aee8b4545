"""The destination_setup alert on credentials: a declared `credential_expires_at` fires
`credential_warning_days` before and resolves when renewed; a platform answer refusing the
credential (Meta code 190, Google invalid_grant), got from the strict fakes over HTTP and logged
as the worker logs it, fires and resolves when a later request is accepted."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from firstparty.alerts.loop import Evaluator
from firstparty.delivery import track
from firstparty.delivery.outbox import DeliveryStatus
from firstparty.destinations import base, registry
from firstparty.destinations.book import DestinationBook
from firstparty.settings import Settings
from firstparty.store import db
from tests import factories
from tests.alerts.rows import Clock
from tests.conftest import settings_for
from tests.fakes import google
from tests.fakes import meta as fake_meta
from tests.fakes.server import send
from tests.fakes.webhook import FakeWebhook

SECRET = "webhook-signing-secret-0123456789"


@pytest.fixture
def receiver() -> Iterator[FakeWebhook]:
    with FakeWebhook(secret=SECRET) as fake:
        yield fake


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[Engine]:
    engine = db.create_engine(sqlite_url)
    yield engine
    engine.dispose()


@pytest.fixture
def any_engine(database_url: str) -> Iterator[Engine]:
    """Each engine: the newest-answer query is SQL of its own."""
    engine = db.create_engine(database_url)
    yield engine
    engine.dispose()


def configured(url: str, receiver: FakeWebhook, *entries: dict[str, Any]) -> Settings:
    alerts = {"webhook": {"url": receiver.url, "secret": SECRET}, "min_interval_minutes": 0}
    settings = settings_for(url, alerts=alerts)
    return settings.model_copy(update={"destinations": registry.parse_all(list(entries))})


def evaluate(settings: Settings, engine: Engine, clock: Clock) -> None:
    book = DestinationBook(settings=settings, engine=engine)
    book.reload()
    evaluator = Evaluator(settings=settings, engine=engine, book=book, clock=clock)

    async def once() -> None:
        try:
            await evaluator.round()
        finally:
            await evaluator.close()

    asyncio.run(once())
    clock.advance(minutes=3)  # past this evaluator's lease: the next one may evaluate


def said(receiver: FakeWebhook) -> list[str]:
    return [m["text"] for m in receiver.messages]


def test_a_declared_expiry_fires_two_weeks_before_and_resolves_when_renewed(
    sqlite_url: str, engine: Engine, receiver: FakeWebhook
) -> None:
    clock = Clock()  # 2026-11-02 09:00 UTC
    expiring = {**factories.META_CAPI, "credential_expires_at": "2026-11-16T10:00:00Z"}
    evaluate(configured(sqlite_url, receiver, expiring), engine, clock)
    assert said(receiver) == []  # 14 days and an hour ahead: not yet
    clock.advance(minutes=57)
    evaluate(configured(sqlite_url, receiver, expiring), engine, clock)
    assert said(receiver) == [
        "[FIRING] firstparty destination_setup meta: credential expires at 2026-11-16 10:00 UTC "
        "(in 14.0 days; warning from 14 days)"
    ]
    renewed = {**factories.META_CAPI, "credential_expires_at": "2027-01-31"}  # a day: midnight
    evaluate(configured(sqlite_url, receiver, renewed), engine, clock)
    assert said(receiver)[1:] == [
        "[RESOLVED] firstparty destination_setup meta: credential expires at 2026-11-16 10:00 "
        "UTC (in 14.0 days; warning from 14 days)"
    ]


def test_a_credential_past_its_expiry_says_expired(
    sqlite_url: str, engine: Engine, receiver: FakeWebhook
) -> None:
    past = {**factories.META_CAPI, "credential_expires_at": "2026-11-01"}
    evaluate(configured(sqlite_url, receiver, past), engine, Clock())
    assert said(receiver) == [
        "[FIRING] firstparty destination_setup meta: credential expired at 2026-11-01 00:00 UTC"
    ]


def log(engine: Engine, destination: str, request: base.OutgoingRequest, clock: Clock) -> None:
    """Send over HTTP to the fake and log the exchange as the worker does."""
    answer = send(request)
    sent = track.Sent(
        request=request,
        attempt=1,
        status=DeliveryStatus.DELIVERED if answer.status < 300 else DeliveryStatus.FAILED,
        response_status=answer.status,
        response_body=answer.body,
    )
    with engine.begin() as conn:
        track.record(conn, destination=destination, sent=sent, now=clock.now)


def test_meta_refusing_the_access_token_fires_and_resolves_when_accepted_again(
    database_url: str, any_engine: Engine, receiver: FakeWebhook
) -> None:
    engine = any_engine
    clock, lead = Clock(), factories.rich_lead(Clock().now - timedelta(minutes=5))
    with fake_meta.FakeMeta() as platform:
        entry = {**factories.META_CAPI, "api_base": platform.api_base}
        settings = configured(database_url, receiver, entry)
        stale = factories.meta(api_base=platform.api_base, access_token="EAAB-revoked")
        log(engine, "meta", stale.build([lead("a")])[0], clock)
        evaluate(settings, engine, clock)
        assert len(said(receiver)) == 1
        assert said(receiver)[0].startswith(
            "[FIRING] firstparty destination_setup meta: Meta refused the access token: "
        )
        assert "(code 190" in said(receiver)[0] and "EAAB-revoked" not in said(receiver)[0]
        fresh = factories.meta(api_base=platform.api_base)
        log(engine, "meta", fresh.build([lead("b")])[0], clock)
        evaluate(settings, engine, clock)
    assert said(receiver)[1].startswith("[RESOLVED] firstparty destination_setup meta")


def test_google_refusing_the_refresh_token_fires(
    sqlite_url: str, engine: Engine, receiver: FakeWebhook
) -> None:
    clock = Clock()
    with google.FakeGoogle() as platform:  # knows no refresh token: every grant is refused
        entry = {**factories.GOOGLE_ADS, "token_url": platform.url + "/token"}
        settings = configured(sqlite_url, receiver, entry)
        ads = factories.google(token_url=platform.url + "/token")
        request = ads.token_request()
        assert request is not None
        log(engine, "google", request, clock)
        evaluate(settings, engine, clock)
    assert said(receiver) == [
        "[FIRING] firstparty destination_setup google: Google refused the OAuth credentials: "
        "invalid_grant: Token has been expired or revoked."
    ]


def test_answers_that_are_not_about_the_credential_fire_nothing() -> None:
    meta, ads = factories.meta(), factories.google()
    assert meta.credential_refused(400, '{"error": {"code": 100, "message": "bad"}}') is None
    assert meta.credential_refused(500, "<html>down</html>") is None
    assert ads.credential_refused(400, '{"error": "invalid_request"}') is None
    assert ads.credential_refused(429, '{"error": {"status": "RESOURCE_EXHAUSTED"}}') is None
    webhook = factories.example_adapter("webhook")
    assert webhook.credential_refused(401, '{"error": "invalid_grant"}') is None
