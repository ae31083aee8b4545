"""Issue 11, Google's corners end to end: the real app, a real worker and the Google fake, which
enforces Google's rules on clicks, time, tokens, quotas and asynchronous processing.

Each test sends through the collector and asserts what Google received and what the outbox
recorded (status, last_error, request log).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import sqlalchemy as sa

from firstparty.destinations import google_rpc
from firstparty.store.models import deliveries, events
from tests.conftest import AppClient
from tests.delivery.outbox import eventually
from tests.e2e.journey import (
    SITE,
    Browser,
    Deployment,
    Platforms,
    admin,
    backdate_clicks,
    delivery_rows,
    iso,
    serving,
    sha256,
)
from tests.fakes import google as fake_google
from tests.fakes.server import Reply

WBRAID = "WBraid-yesterday-0001"
OLD_GCLID = "CjwKCAjw-sixty-days-old"
GCLID = "Cj0KCQiA-corners-gclid"
EMAIL = "lead@example.com"
ALL_STATUSES = {"delivered", "failed", "skipped", "test"}


def google_only(platforms: Platforms, **overrides: Any) -> list[dict[str, Any]]:
    [google] = [d for d in platforms.destinations() if d["name"] == "google"]
    return [google | overrides]


def legacy(platforms: Platforms) -> list[dict[str, Any]]:
    oauth = platforms.google.add_refresh_token(
        "fp-legacy.apps.googleusercontent.com",
        "fp-legacy-secret",
        "1//fp-legacy-refresh",
        fake_google.ADWORDS,
    )
    return google_only(
        platforms, api="google_ads_api", api_base=platforms.google.url + "/v26", oauth=oauth
    )


async def lead(
    app: AppClient,
    *,
    landing: str | None = None,
    clicked_ago: timedelta = timedelta(0),
    **fields: Any,
) -> str:
    """A browser (optionally landing on `landing` `clicked_ago`) sends a Lead; its event_id."""
    event_id = str(uuid.uuid4())
    async with Browser(app) as browser:
        if landing is not None:
            page = await browser.send({"type": "page", "url": f"{SITE}{landing}"})
            if clicked_ago:
                await asyncio.to_thread(
                    backdate_clicks, app.engine, page["visitor_id"], clicked_ago
                )
        body = {"type": "track", "name": "Lead", "event_id": event_id, "user": {"email": EMAIL}}
        await browser.send(body | fields)
    return event_id


def row_of(app: AppClient, event_id: str) -> Any:
    with app.engine.connect() as conn:
        pk = conn.execute(sa.select(events.c.id).where(events.c.event_id == event_id)).scalar()
    return next(r for r in delivery_rows(app.engine) if r["event_pk"] == pk)


async def settled(app: AppClient, count: int) -> None:
    async def done() -> bool:
        found = await asyncio.to_thread(delivery_rows, app.engine)
        return len(found) >= count and all(r["status"] in ALL_STATUSES for r in found)

    await eventually(done, timeout=30)


def sent_for(platforms: Platforms, event_id: str) -> list[dict[str, Any]]:
    return [e for e in platforms.google_events() if e["transactionId"] == event_id]


def make_due(app: AppClient, event_id: str) -> None:
    """As if the wait had passed: the delivery is due now."""
    row = row_of(app, event_id)
    with app.engine.begin() as conn:
        conn.execute(
            sa.update(deliveries)
            .where(deliveries.c.id == row["id"])
            .values(next_attempt_at=datetime.now(UTC))
        )


# ---------------------------------------------------------------- clicks and time


async def test_the_freshest_click_seen_before_the_lead_is_credited(
    deployment: Deployment, platforms: Platforms
) -> None:
    fake = platforms.google
    now = datetime.now(UTC)
    fake.click(WBRAID, now - timedelta(days=1, minutes=1))
    fake.click(OLD_GCLID, now - timedelta(days=60))
    fake.click(GCLID, now - timedelta(seconds=30))  # Google's click, just before the landing
    settings = deployment.settings(destinations=google_only(platforms))
    sixty_days = int((now - timedelta(days=60)).timestamp())
    async with serving(settings) as app:
        # Yesterday's wbraid beats the 60-day-old gclid of the Google tag's cookie.
        wbraid = await lead(
            app,
            landing=f"/apply?wbraid={WBRAID}",
            clicked_ago=timedelta(days=1),
            context={"gcl_aw": f"GCL.{sixty_days}.{OLD_GCLID}"},
        )
        # A lead stated five minutes before its browser landed from the ad: the click came
        # after the conversion, so it is not credited (Google would refuse it).
        stated_earlier = await lead(
            app,
            landing=f"/apply?gclid={GCLID}",
            timestamp=iso((now - timedelta(minutes=5)).replace(microsecond=0)),
        )
        await settled(app, 2)
        rows = {e: row_of(app, e) for e in (wbraid, stated_earlier)}

    assert {e: (r["status"], r["last_error"]) for e, r in rows.items()} == {
        wbraid: ("delivered", None),
        stated_earlier: ("delivered", None),
    }
    [first] = sent_for(platforms, wbraid)
    assert first["adIdentifiers"] == {"wbraid": WBRAID}
    [second] = sent_for(platforms, stated_earlier)
    assert "adIdentifiers" not in second
    assert second["userData"]["userIdentifiers"] == [{"emailAddress": sha256(EMAIL)}]
    # Google processed both: each request was followed up until it said SUCCESS.
    assert all(r["request_id"] in fake.status_calls for r in rows.values())


async def test_the_address_reaches_google_with_postal_and_country_in_clear(
    deployment: Deployment, platforms: Platforms
) -> None:
    settings = deployment.settings(destinations=google_only(platforms))
    user = {
        "email": EMAIL,
        "first_name": " John ",
        "last_name": "Smith",
        "zip": "94043-1351",
        "country": "us",
    }
    async with serving(settings) as app:
        event_id = await lead(app, user=user)
        await settled(app, 1)
        status = row_of(app, event_id)["status"]

    assert status == "delivered"
    [sent] = sent_for(platforms, event_id)
    assert sent["userData"]["userIdentifiers"] == [
        {"emailAddress": sha256(EMAIL)},
        {
            "address": {
                "givenName": sha256("john"),
                "familyName": sha256("smith"),
                "regionCode": "US",
                "postalCode": "94043",
            }
        },
    ]


# ---------------------------------------------------------------- what Google really did


async def test_google_final_status_decides_delivered_or_failed(
    deployment: Deployment, platforms: Platforms
) -> None:
    fake = platforms.google
    fake.match_rate = "MATCH_RATE_RANGE_41_TO_50"
    # Our first sighting says yesterday, but Google's click is 91 days old: EVENT_TOO_OLD.
    fake.click(GCLID, datetime.now(UTC) - timedelta(days=91))
    settings = deployment.settings(destinations=google_only(platforms))
    async with serving(settings) as app:
        expired = await lead(app, landing=f"/apply?gclid={GCLID}", clicked_ago=timedelta(days=1))
        await settled(app, 1)
        matched = await lead(app)
        await settled(app, 2)
        rows = {e: row_of(app, e) for e in (expired, matched)}
        tracks = await admin(app, "/v1/admin/tracks", destination="google", limit="100")
        event = await admin(app, f"/v1/admin/events/{rows[expired]['event_pk']}")

    failed, delivered = rows[expired], rows[matched]
    assert failed["status"] == "failed"
    assert failed["last_error"] == (
        "Google FAILED (conversion action 111111111): 1 record(s); match rate 41_TO_50; "
        "errors: PROCESSING_ERROR_REASON_EVENT_TOO_OLD x1"
    )
    assert delivered["status"] == "delivered"
    assert delivered["last_error"] == (
        "Google SUCCESS (conversion action 111111111): 1 record(s); match rate 41_TO_50"
    )
    assert failed["request_id"] and delivered["request_id"] and failed["confirm_until"] is None
    assert fake.ingested.keys() == {("111111111", matched)}  # the expired one was not counted
    # The request log: each ingest answered a requestId, each status call Google's word.
    paths = [t["url"].split("/v1/")[1].split("?")[0] for t in tracks["items"] if "/v1/" in t["url"]]
    assert paths.count("events:ingest") == 2
    assert paths.count("requestStatus:retrieve") == 4  # PROCESSING, then the final answer
    linked = [
        (t["status"], t["outcome"], t["reason"])
        for t in event["tracks"]
        if "requestStatus" in t["url"]
    ]
    assert ("failed", "rejected", failed["last_error"]) in linked
    assert any(t[0] == "confirming" and t[1] == "retry" for t in linked)


async def test_polling_stops_with_a_clear_failure_at_the_deadline(
    sqlite_url: str, platforms: Platforms
) -> None:
    platforms.google.processing_calls = 10**6  # Google never finishes
    deployment = Deployment("sqlite", sqlite_url, None)
    destinations = google_only(platforms, request_status_deadline_seconds=1.5)
    async with serving(deployment.settings(destinations=destinations)) as app:
        event_id = await lead(app)
        await settled(app, 1)
        row = row_of(app, event_id)

    assert row["status"] == "failed"
    assert row["last_error"].startswith("no final answer by the follow-up deadline")
    assert "PROCESSING" in row["last_error"]
    calls = platforms.google.status_calls[row["request_id"]]
    assert 2 <= calls <= 12  # growing waits, bounded by the deadline


async def test_validate_only_is_recorded_as_test_and_not_followed_up(
    sqlite_url: str, platforms: Platforms
) -> None:
    deployment = Deployment("sqlite", sqlite_url, None)
    destinations = google_only(platforms, validate_only=True)
    async with serving(deployment.settings(destinations=destinations)) as app:
        event_id = await lead(app)
        await settled(app, 1)
        row = row_of(app, event_id)

    assert (row["status"], row["request_id"]) == ("test", None)
    assert row["last_error"] == "validateOnly: passed validation, nothing stored"
    assert platforms.google.ingested == {} and platforms.google.status_calls == {}


# ---------------------------------------------------------------- tokens, waits and quotas


async def test_a_stale_token_is_refreshed_and_the_lead_delivered_promptly(
    deployment: Deployment, platforms: Platforms
) -> None:
    fake = platforms.google
    settings = deployment.settings(destinations=google_only(platforms))
    async with serving(settings) as app:
        first = await lead(app)
        await settled(app, 1)
        fake.expire_tokens()  # the cached access token is now refused with 401
        second = await lead(app)
        await settled(app, 2)
        rows = {e: row_of(app, e) for e in (first, second)}
        tracks = await admin(app, "/v1/admin/tracks", destination="google", limit="100")

    assert {e: r["status"] for e, r in rows.items()} == dict.fromkeys((first, second), "delivered")
    assert rows[second]["attempts"] == 2
    ingests = [
        (t["response_status"], t["attempt"])
        for t in sorted(tracks["items"], key=lambda t: t["id"])
        if t["url"].endswith("events:ingest")
    ]
    assert ingests == [(200, 1), (401, 1), (200, 2)]
    tokens = [t for t in tracks["items"] if t["url"].endswith("/token")]
    assert len(tokens) == 2  # the first, and the one fetched after the 401


async def test_a_401_to_a_fresh_token_fails_for_good(
    deployment: Deployment, platforms: Platforms
) -> None:
    fake = platforms.google
    settings = deployment.settings(destinations=google_only(platforms))
    async with serving(settings) as app:
        first = await lead(app)
        await settled(app, 1)
        fake.expire_tokens()
        fake.script(
            fake_google.unauthenticated(),
            Reply(200, {"access_token": "ya29.bad", "expires_in": 3599}),
            fake_google.unauthenticated("ACCOUNT_STATE_INVALID"),
        )
        second = await lead(app)
        await settled(app, 2)
        rows = [row_of(app, e) for e in (first, second)]

    assert [(r["status"], r["attempts"]) for r in rows] == [("delivered", 1), ("failed", 2)]
    assert "UNAUTHENTICATED" in rows[1]["last_error"]
    assert "ACCOUNT_STATE_INVALID" in rows[1]["last_error"]


async def test_too_recent_event_is_retried_after_six_hours_past_the_retry_window(
    sqlite_url: str, platforms: Platforms
) -> None:
    fake = platforms.google
    fake.click(GCLID, datetime.now(UTC) - timedelta(hours=1, minutes=1))
    deployment = Deployment("sqlite", sqlite_url, None)
    async with serving(deployment.settings(destinations=legacy(platforms))) as app:
        event_id = await lead(app, landing=f"/apply?gclid={GCLID}", clicked_ago=timedelta(hours=1))

        async def waiting() -> bool:
            row = await asyncio.to_thread(row_of, app, event_id)
            return bool(row["status"] == "pending" and row["last_error"])

        await eventually(waiting)
        row = row_of(app, event_id)
        assert row["last_error"].startswith("TOO_RECENT_EVENT")
        wait = row["next_attempt_at"] - row["first_attempt_at"]
        assert timedelta(hours=5, minutes=59) < wait <= timedelta(hours=6, seconds=5)
        assert wait > timedelta(hours=4)  # past the usual retry window
        # Six hours later Google takes it.
        fake.clock = lambda: datetime.now(UTC) + timedelta(hours=6, minutes=1)
        await asyncio.to_thread(make_due, app, event_id)
        await settled(app, 1)
        done = row_of(app, event_id)

    # 3 tries: the cached access token is 6 hours old at Google, so the second try gets a 401
    # and the third, a second later, goes with a new token.
    assert (done["status"], done["attempts"], done["last_error"]) == ("delivered", 3, None)
    assert [u["gclid"] for u in fake.uploaded] == [GCLID]


async def test_retry_after_as_an_http_date_is_honoured(
    sqlite_url: str, platforms: Platforms
) -> None:
    fake = platforms.google
    later = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=3)
    busy = fake_google.status_error(
        503,
        "UNAVAILABLE",
        "The service is currently unavailable.",
        headers={"Retry-After": format_datetime(later, usegmt=True)},
    )
    deployment = Deployment("sqlite", sqlite_url, None)
    async with serving(deployment.settings(destinations=google_only(platforms))) as app:
        await lead(app)  # the access token is cached: the next request is the ingest
        await settled(app, 1)
        fake.script(busy)
        event_id = await lead(app)
        await settled(app, 2)
        row = row_of(app, event_id)

    assert (row["status"], row["attempts"]) == ("delivered", 2)
    ingests = [r for r in fake.requests if r.path.endswith("events:ingest")]
    assert len(ingests) == 3
    assert ("111111111", event_id) in fake.ingested
    assert row["updated_at"] >= later - timedelta(seconds=1)


async def test_a_spent_daily_quota_parks_the_work_until_midnight_pacific(
    sqlite_url: str, platforms: Platforms
) -> None:
    fake = platforms.google
    fake.daily_requests = 0
    deployment = Deployment("sqlite", sqlite_url, None)
    async with serving(deployment.settings(destinations=google_only(platforms))) as app:
        event_id = await lead(app)

        async def parked() -> bool:
            row = await asyncio.to_thread(row_of, app, event_id)
            return bool(row["status"] == "pending" and row["last_error"])

        await eventually(parked)
        row = row_of(app, event_id)
        assert row["last_error"].startswith("daily quota spent, parked until it resets")
        reset = row["updated_at"] + timedelta(
            seconds=google_rpc.until_quota_reset(row["updated_at"])
        )
        assert abs(row["next_attempt_at"] - reset) < timedelta(seconds=5)
        pacific = row["next_attempt_at"].astimezone(fake_google.QUOTA_DAY)
        assert (pacific.hour, pacific.minute) in ((0, 0), (0, 1))
        # The quota day turns: Google takes it.
        fake.clock = lambda: datetime.now(UTC) + timedelta(days=1)
        fake.daily_requests = 10
        await asyncio.to_thread(make_due, app, event_id)
        await settled(app, 1)
        done = row_of(app, event_id)

    # 3 tries: a day later the cached token has expired at Google (401, then a new token).
    assert (done["status"], done["attempts"]) == ("delivered", 3)
