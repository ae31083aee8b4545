"""Google's verdict on Customer Match adds, followed up with `requestStatus:retrieve`: members
of an accepted ingest stay pending (acknowledged, never sent twice) until Google's final word at
a later run; SUCCESS confirms them, FAILED drops them and they are sent again (held once),
PROCESSING keeps them pending; past the deadline they are sent again. Through the real app,
sync and Sender against the strict fake, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa

from firstparty.identity import pii
from firstparty.store.models import audience_members_acked, audience_runs, tracks
from tests.audiences.test_platform_sync import EMAILS, audience, counts, people, sync
from tests.conftest import AppClient, running_app, settings_for
from tests.fakes import google_audience

Fake = google_audience.FakeGoogleAudience
HELD = {pii.sha256("janedoe@gmail.com"), pii.sha256(EMAILS[1]), pii.sha256(EMAILS[2])}


@pytest.fixture(params=["sqlite", "postgresql"])
def engine_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def google_settings(fake: Fake, **more: Any) -> dict[str, Any]:
    return {
        "name": "google-leads",
        "type": "google_customer_match",
        "customer_id": google_audience.CUSTOMER_ID,
        "user_list_id": google_audience.USER_LIST_ID,
        "oauth": fake.add_refresh_token("cid.apps", "client-secret-x", "1//refresh-secret"),
        "token_url": fake.url + "/token",
        "api_base": fake.url + "/v1",
        "accept_customer_match_terms": True,
        "request_status_delay_seconds": 0,
        **more,
    }


@pytest.fixture
async def google(database_url: str) -> AsyncIterator[tuple[AppClient, Fake]]:
    with Fake() as fake:
        settings = settings_for(
            database_url,
            destinations=[google_settings(fake)],
            audiences=[audience("leads", "google-leads")],
        )
        async with running_app(settings) as app:
            yield app, fake


def pending(app: AppClient) -> dict[str, str | None]:
    """Member key -> the request id it awaits Google's verdict on (None: confirmed)."""
    c = audience_members_acked.c
    with app.engine.connect() as conn:
        rows = conn.execute(sa.select(c.member_key, c.request_id))
        return {r.member_key: r.request_id for r in rows}


def calls(app: AppClient) -> list[tuple[str, str, str]]:
    with app.engine.connect() as conn:
        rows = conn.execute(sa.select(tracks).order_by(tracks.c.id)).mappings().all()
    return [(r["method"], r["url"].rsplit("/", 1)[-1].split("?")[0], r["status"]) for r in rows]


def ingested(fake: Fake) -> list[int]:
    """Members per ingest request the fake received."""
    return [
        len(r.json()["audienceMembers"])
        for r in fake.requests
        if r.path.endswith("audienceMembers:ingest")
    ]


async def test_accepted_members_stay_pending_until_success_and_are_never_resent(
    google: tuple[AppClient, Fake],
) -> None:
    app, fake = google
    fake.processing_calls = 1  # Google still processing at the first ask
    await people(app)
    assert counts(await sync(app, "leads")) == (3, 3, 0, 0)
    [request_id] = set(pending(app).values())
    assert request_id and request_id in fake.status_calls

    still = await sync(app, "leads")  # PROCESSING: kept pending, nothing sent again
    assert counts(still) == (3, 0, 0, 0)
    assert set(pending(app).values()) == {request_id}

    confirmed = await sync(app, "leads")  # SUCCESS: confirmed
    assert counts(confirmed) == (3, 0, 0, 0) and confirmed.detail == ""
    assert set(pending(app).values()) == {None}
    assert fake.emails() == HELD and ingested(fake) == [3]

    quiet = await sync(app, "leads")  # nothing to send, nothing to ask: not even a token
    assert counts(quiet) == (3, 0, 0, 0)
    assert calls(app) == [
        ("POST", "token", "delivered"),
        ("POST", "audienceMembers:ingest", "delivered"),
        ("POST", "token", "delivered"),
        ("GET", "requestStatus:retrieve", "confirming"),
        ("POST", "token", "delivered"),
        ("GET", "requestStatus:retrieve", "delivered"),
    ]
    assert fake.status_calls[request_id] == 2


async def test_members_google_fails_are_sent_again_and_held_once(
    google: tuple[AppClient, Fake],
) -> None:
    app, fake = google
    fake.processing_calls = 0
    await people(app)
    fake.refuse_next(1)  # accepted now, FAILED in processing
    assert counts(await sync(app, "leads")) == (3, 3, 0, 0)
    [failed_id] = set(pending(app).values())
    assert fake.size() == 0

    again = await sync(app, "leads")  # the verdict: FAILED -> the three are sent again
    assert again.adds == 3 and again.errors == 3
    assert "FAILED" in again.detail and "PROCESSING_ERROR_REASON_INVALID_EVENT" in again.detail
    [resent_id] = set(pending(app).values())
    assert resent_id not in (None, failed_id)
    assert fake.emails() == HELD and fake.size() == 3

    assert counts(await sync(app, "leads")) == (3, 0, 0, 0)  # SUCCESS: confirmed
    assert set(pending(app).values()) == {None}
    assert ingested(fake) == [3, 3] and fake.size() == 3  # held once
    with app.engine.connect() as conn:
        details = conn.execute(sa.select(audience_runs.c.detail).order_by(audience_runs.c.id))
        assert "FAILED" in str(details.scalars().all()[1])


async def test_a_request_google_never_decides_is_sent_again_after_the_deadline(
    database_url: str,
) -> None:
    with Fake() as fake:
        fake.processing_calls = 1000
        destination = google_settings(fake, request_status_deadline_seconds=0.001)
        settings = settings_for(
            database_url, destinations=[destination], audiences=[audience("leads", "google-leads")]
        )
        async with running_app(settings) as app:
            await people(app)
            assert counts(await sync(app, "leads")) == (3, 3, 0, 0)
            [first_id] = set(pending(app).values())
            late = await sync(app, "leads")
            assert late.adds == 3 and "deadline" in late.detail
            assert set(pending(app).values()) - {first_id, None}
            assert fake.size() == 3 and ingested(fake) == [3, 3]
