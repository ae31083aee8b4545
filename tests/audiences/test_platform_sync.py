"""Audience sync end to end on Google's and TikTok's strict fakes (Meta's: test_sync.py): people
made through the app, the real sync and Sender; Google's OAuth token fetched on runs that send
and logged masked, a refused token request retried at the next run; TikTok's rate limit retried
at the next run. SQLite."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa

from firstparty.audiences import service
from firstparty.audiences.sync import RunResult
from firstparty.identity import pii
from firstparty.store.models import tracks
from tests.audiences.people import DENIED, lead, named
from tests.conftest import AppClient, running_app, settings_for
from tests.e2e.journey import Browser, server_send
from tests.fakes import google_audience, tiktok_audience
from tests.fakes.google import unavailable

EMAILS = ("Jane.Doe@gmail.com", "bob@example.com", "carol@example.com")


def counts(result: RunResult) -> tuple[int, int, int, int]:
    return result.size, result.adds, result.removes, result.errors


async def people(app: AppClient) -> list[str]:
    """Three consenting leads and one who denied ad_personalization; their visitor ids."""
    ids = []
    for n, email in enumerate(EMAILS):
        async with Browser(app, f"198.51.100.{40 + n}") as browser:
            ids.append((await browser.send(lead(150, email)))["visitor_id"])
    async with Browser(app, "198.51.100.49") as private:
        await private.send(lead(150, "private@example.com", DENIED))
    return ids


async def sync(app: AppClient, name: str) -> RunResult:
    [result] = await service.sync_now(
        settings=app.settings, engine=app.engine, name=name, trigger="command"
    )
    return result


def audience(name: str, destination: str) -> dict[str, Any]:
    rules = [{"did": "Lead", "within_days": 30}, {"did_not": "Purchase", "within_days": 90}]
    return {"name": name, "destinations": [destination], "rules": rules, "every_minutes": 0}


@pytest.fixture
async def google(
    sqlite_url: str,
) -> AsyncIterator[tuple[AppClient, google_audience.FakeGoogleAudience]]:
    with google_audience.FakeGoogleAudience() as fake:
        oauth = fake.add_refresh_token("cid.apps", "client-secret-x", "1//refresh-secret")
        destination = {
            "name": "google-leads",
            "type": "google_customer_match",
            "customer_id": google_audience.CUSTOMER_ID,
            "user_list_id": google_audience.USER_LIST_ID,
            "oauth": oauth,
            "token_url": fake.url + "/token",
            "api_base": fake.url + "/v1",
            "accept_customer_match_terms": True,
        }
        settings = settings_for(
            sqlite_url,
            destinations=[destination],
            audiences=[audience("leads", "google-leads")],
        )
        async with running_app(settings) as app:
            yield app, fake


async def test_google_list_holds_the_consenting_members_and_a_token_failure_is_retried(
    google: tuple[AppClient, google_audience.FakeGoogleAudience],
) -> None:
    app, fake = google
    visitors = await people(app)
    first = await sync(app, "leads")
    assert counts(first) == (3, 3, 0, 0)  # the private lead matches but is never sent
    gmail = pii.sha256("janedoe@gmail.com")  # Google's rule: dots of a gmail local part dropped
    assert fake.emails() == {gmail, pii.sha256("bob@example.com"), pii.sha256("carol@example.com")}
    # nothing new, and Google's verdict not due yet (30 min): nothing sent, not even a token
    assert counts(await sync(app, "leads")) == (3, 0, 0, 0)

    await server_send(app, named("Purchase", visitor_id=visitors[1]))  # bob converts
    fake.script(unavailable())  # the token endpoint fails: nothing can be sent this run
    refused = await sync(app, "leads")
    assert counts(refused) == (2, 0, 0, 1) and "503" in refused.detail
    assert fake.size() == 3
    assert counts(await sync(app, "leads")) == (2, 0, 1, 0)  # a fresh token: bob removed
    assert fake.emails() == {gmail, pii.sha256("carol@example.com")}

    with app.engine.connect() as conn:
        logged = conn.execute(sa.select(tracks).order_by(tracks.c.id)).mappings().all()
    urls = [(r["method"], r["url"].rsplit("/", 1)[-1], r["status"]) for r in logged]
    assert urls == [
        ("POST", "token", "delivered"),
        ("POST", "audienceMembers:ingest", "delivered"),
        ("POST", "token", "failed"),
        ("POST", "token", "delivered"),
        ("POST", "audienceMembers:remove", "delivered"),
    ]
    text = json.dumps([dict(r) for r in logged], default=str)
    assert "1//refresh-secret" not in text and "client-secret-x" not in text
    assert "ya29.fake" not in text  # the access tokens are masked too


@pytest.fixture
async def tiktok(
    sqlite_url: str,
) -> AsyncIterator[tuple[AppClient, tiktok_audience.FakeTikTokAudience]]:
    with tiktok_audience.FakeTikTokAudience() as fake:
        destination = {
            "name": "tiktok-leads",
            "type": "tiktok_audience",
            "advertiser_id": tiktok_audience.ADVERTISER_ID,
            "audience_id": tiktok_audience.AUDIENCE_ID,
            "access_token": tiktok_audience.ACCESS_TOKEN,
            "api_base": fake.api_base,
        }
        settings = settings_for(
            sqlite_url,
            destinations=[destination],
            audiences=[audience("leads", "tiktok-leads")],
        )
        async with running_app(settings) as app:
            yield app, fake


async def test_tiktok_rate_limit_is_retried_at_the_next_run(
    tiktok: tuple[AppClient, tiktok_audience.FakeTikTokAudience],
) -> None:
    app, fake = tiktok
    await people(app)
    fake.fail_next(1)
    limited = await sync(app, "leads")
    assert counts(limited) == (3, 0, 0, 3) and "rate limit" in limited.detail
    assert limited.warning and "about 1000 matched people" in limited.warning
    assert fake.size() == 0
    assert counts(await sync(app, "leads")) == (3, 3, 0, 0)
    assert fake.emails() == {pii.sha256(e.lower()) for e in EMAILS}
