"""Issue 4 end to end: a visitor lands from an ad and converts; the real app, a real worker and
the four platform fakes (real local servers that check each platform's rules) in between.

Expected hashes are computed here from the clear values, independently of firstparty's code.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from firstparty.store import db
from tests.conftest import AppClient, base_config, settings_for
from tests.e2e.journey import (
    LAPTOP_UA,
    LEAD_ACTION,
    SITE,
    Browser,
    Deployment,
    Platforms,
    admin,
    all_settled,
    backdate_clicks,
    cli,
    epoch,
    iso,
    outcomes,
    server_send,
    serving,
    sha256,
    whole_seconds_ago,
    worker_process,
    write_config,
)
from tests.fakes import meta as fake_meta

GCLID = "Cj0KCQiA5rGuBhCnARIsAN11vgQe2e-Test_gclid"
FBCLID = "IwAR2F4-dbP0l7Mn1IawQQGCINEz7PYXQvwjNwB_qa2ofrHyiLjcbCRxTDMgk"  # case matters to Meta
TTCLID = "E.C.P.CqgBe2eTtClId-Xy_9"
FBP = "fb.1.1767000000000.1116446470"
GA = "GA1.1.1234567890.1767000000"
LANDING = f"{SITE}/apply?utm_source=google&gclid={GCLID}&fbclid={FBCLID}&ttclid={TTCLID}"
EMAIL, EMAIL_NORMAL = "  John.Doe@Example.COM ", "john.doe@example.com"
PHONE, PHONE_DIGITS, PHONE_E164 = "+1 (617) 555-0100", "16175550100", "+16175550100"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
BROWSER_IP = "198.51.100.7"
# The visitor clicked the ad this long before its Lead: Google credits no click first seen
# after the conversion.
CLICKED_BEFORE = timedelta(hours=1)


@dataclass(frozen=True)
class Journey:
    lead_id: str  # our event_id
    lead_pk: str  # firstparty's id of the Lead
    lead_at: datetime
    landed: tuple[datetime, datetime]  # the landing request was between these


async def land_and_lead(app: AppClient, *, lead_at: datetime) -> Journey:
    """The laptop lands from an ad with its pixel cookies, then sends a Lead."""
    lead_id = str(uuid.uuid4())
    async with Browser(app, ip=BROWSER_IP) as laptop:
        before = datetime.now(UTC)
        page = await laptop.send(
            {
                "type": "page",
                "url": LANDING,
                "referrer": "https://www.google.com/",
                "title": "Apply",
                "context": {"fbp": FBP, "ga": GA},
            }
        )
        after = datetime.now(UTC)
        await asyncio.to_thread(backdate_clicks, app.engine, page["visitor_id"], CLICKED_BEFORE)
        lead = await laptop.send(
            {
                "type": "track",
                "name": "Lead",
                "event_id": lead_id,
                "timestamp": iso(lead_at),
                "url": f"{SITE}/apply/thanks",
                "user": {"email": EMAIL, "phone": PHONE},
                "properties": {"value": 49.0, "currency": "USD"},
            }
        )
    assert lead["event_id"] == lead_id and lead["visitor_id"] == page["visitor_id"]
    landed = (before - CLICKED_BEFORE, after - CLICKED_BEFORE)
    return Journey(lead_id, lead["id"], lead_at, landed)


def millis(when: datetime) -> int:
    return (when - EPOCH) // timedelta(milliseconds=1)


async def expected_fbc(app: AppClient, journey: Journey) -> str:
    """fb.1.<ms the fbclid was first seen>.<fbclid>; the time as the admin API shows it."""
    event = await admin(app, f"/v1/admin/events/{journey.lead_pk}")
    [click] = [c for c in event["visitor"]["click_ids"] if c["kind"] == "fbclid"]
    assert click["value"] == FBCLID
    seen = millis(datetime.fromisoformat(click["first_seen_at"]))
    assert millis(journey.landed[0]) <= seen <= millis(journey.landed[1])
    return f"fb.1.{seen}.{FBCLID}"


def check_meta_lead(platforms: Platforms, journey: Journey, fbc: str) -> None:
    [lead] = platforms.meta_events("Lead")
    assert lead["event_id"] == journey.lead_id
    assert lead["event_time"] == epoch(journey.lead_at)
    assert lead["action_source"] == "website"
    assert lead["event_source_url"] == f"{SITE}/apply/thanks"
    user = lead["user_data"]
    assert user["em"] == [sha256(EMAIL_NORMAL)]
    assert user["ph"] == [sha256(PHONE_DIGITS)]  # Meta: digits with country code, no "+"
    assert user["fbc"] == fbc
    assert user["fbp"] == FBP
    assert (user["client_ip_address"], user["client_user_agent"]) == (BROWSER_IP, LAPTOP_UA)
    assert lead["custom_data"]["value"] == 49.0 and lead["custom_data"]["currency"] == "USD"


def check_others(platforms: Platforms, journey: Journey) -> None:
    """TikTok, Google and GA4 each got the Lead once, right."""
    [tiktok] = platforms.tiktok_events("Lead")
    assert tiktok["event_id"] == journey.lead_id
    assert tiktok["event_time"] == epoch(journey.lead_at)
    assert tiktok["user"]["email"] == sha256(EMAIL_NORMAL)
    assert tiktok["user"]["phone"] == sha256(PHONE_E164)  # TikTok: E.164 with "+"
    assert tiktok["user"]["ttclid"] == TTCLID

    [google] = platforms.google_events()  # page views are not mapped for Google
    assert google["transactionId"] == journey.lead_id
    assert google["eventTimestamp"] == iso(journey.lead_at)
    assert google["adIdentifiers"]["gclid"] == GCLID
    identifiers = google["userData"]["userIdentifiers"]
    assert {"emailAddress": sha256(EMAIL_NORMAL)} in identifiers
    assert {"phoneNumber": sha256(PHONE_E164)} in identifiers
    assert list(platforms.google.ingested) == [(LEAD_ACTION, journey.lead_id)]
    assert platforms.google.adjustments == 0

    [ga4] = platforms.ga4_events("generate_lead")
    assert ga4["client_id"] == "1234567890.1767000000"  # from the _ga cookie
    assert ga4["event"]["timestamp_micros"] == epoch(journey.lead_at) * 1_000_000
    assert platforms.ga4.messages == []


def fake_of(platforms: Platforms, destination: str) -> Any:
    return {
        "meta": platforms.meta,
        "tiktok": platforms.tiktok,
        "google": platforms.google,
        "ga4": platforms.ga4,
    }[destination]


async def check_tracks(app: AppClient, platforms: Platforms, journey: Journey) -> None:
    """Every request each fake received is in the tracks log; the Lead's are linked to it."""
    for destination in ("meta", "tiktok", "google", "ga4"):
        page = await admin(app, "/v1/admin/tracks", destination=destination, limit="1000")
        logged = Counter((t["method"], urlsplit(t["url"]).path) for t in page["items"])
        received = Counter((r.method, r.path) for r in fake_of(platforms, destination).requests)
        assert logged == received, destination
    event = await admin(app, f"/v1/admin/events/{journey.lead_pk}")
    assert {d["destination"]: d["status"] for d in event["deliveries"]} == dict.fromkeys(
        ("meta", "tiktok", "google", "ga4"), "delivered"
    )
    carried = {
        t["destination"]
        for t in event["tracks"]
        if t["status"] == "delivered" and t["outcome"] == "delivered" and t["response_status"]
    }
    assert carried == {"meta", "tiktok", "google", "ga4"}
    by_event_id = await admin(app, "/v1/admin/tracks", event_id=journey.lead_id)
    assert all(journey.lead_id in t["event_ids"] for t in by_event_id["items"])
    assert {t["destination"] for t in by_event_id["items"]} >= {"meta", "tiktok", "google", "ga4"}


async def test_a_lead_reaches_every_platform_once(
    deployment: Deployment, platforms: Platforms
) -> None:
    settings = deployment.settings(destinations=platforms.destinations())
    async with serving(settings) as app:
        journey = await land_and_lead(app, lead_at=whole_seconds_ago(90))
        await all_settled(app.engine, count=7)  # page: meta, tiktok, ga4; Lead: all four

        assert set(outcomes(app.engine).values()) == {("delivered", None)}
        check_meta_lead(platforms, journey, await expected_fbc(app, journey))
        check_others(platforms, journey)
        await check_tracks(app, platforms, journey)


def config_file(deployment: Deployment, platforms: Platforms) -> dict[str, Any]:
    """The config an operator would write once the Meta token is fixed."""
    return {
        "delivery": deployment.delivery,
        "sources": base_config(deployment.database_url)["sources"],
        "destinations": platforms.destinations(),
    }


async def test_a_bad_token_fails_meta_alone_and_replay_sends_the_original_time(
    deployment: Deployment, platforms: Platforms, tmp_path: Path
) -> None:
    revoked = deployment.settings(destinations=platforms.destinations(meta_token="EAAB-revoked"))
    async with serving(revoked) as app:
        journey = await land_and_lead(app, lead_at=whole_seconds_ago(300))
        await all_settled(app.engine, count=7)
        failed = await admin(app, "/v1/admin/tracks", status="failed", destination="meta")
        got = outcomes(app.engine)

    for (_, destination), (status, error) in got.items():
        if destination == "meta":
            assert status == "failed"
            assert error is not None and "Invalid OAuth access token" in error
        else:
            assert (status, error) == ("delivered", None)
    assert failed["items"] and all(
        "Invalid OAuth access token" in (t["error"] or t["response_body"]) for t in failed["items"]
    )
    assert platforms.meta.events == []
    check_others(platforms, journey)

    fixed = deployment.settings(destinations=platforms.destinations())
    env = write_config(tmp_path / "firstparty.toml", fixed, config_file(deployment, platforms))
    assert fake_meta.ACCESS_TOKEN not in (tmp_path / "firstparty.toml").read_text()
    replayed_at = datetime.now(UTC)
    with worker_process(env, tmp_path / "worker.log"):
        done = await asyncio.to_thread(cli, env, "replay", "--destination", "meta")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "matched 2 failed deliveries; re-queued 2" in done.stdout
        engine = db.create_engine(deployment.database_url)
        try:
            await all_settled(engine, count=7)
            after = outcomes(engine)
        finally:
            engine.dispose()

    assert set(after.values()) == {("delivered", None)}, after
    [lead] = platforms.meta_events("Lead")
    assert lead["event_id"] == journey.lead_id
    assert lead["event_time"] == epoch(journey.lead_at) < epoch(replayed_at) - 200
    assert len(platforms.meta_events("PageView")) == 1
    check_others(platforms, journey)  # nothing delivered was sent again


async def test_an_eight_day_old_server_event_skips_meta_and_reaches_google(
    sqlite_url: str, platforms: Platforms
) -> None:
    fast = {"backoff_base_seconds": 0.01, "backoff_max_seconds": 0.05}
    settings = settings_for(
        sqlite_url,
        destinations=platforms.destinations(),
        delivery=fast | {"sweep_interval_seconds": 0.1},
    )
    occurred = whole_seconds_ago(8 * 86400)
    event_id = str(uuid.uuid4())
    async with serving(settings) as app:
        await server_send(
            app,
            {
                "type": "track",
                "name": "Lead",
                "event_id": event_id,
                "timestamp": iso(occurred),
                "user": {"email": EMAIL, "phone": PHONE},
                "context": {"ip": "203.0.113.9", "user_agent": LAPTOP_UA},
            },
        )
        await all_settled(app.engine, count=4)
        got = outcomes(app.engine)

    status, reason = got[(event_id, "meta")]
    assert status == "skipped" and reason is not None and "up to 7 days old" in reason
    assert got[(event_id, "google")] == ("delivered", None)
    [google] = platforms.google_events()
    assert google["transactionId"] == event_id
    assert google["eventTimestamp"] == iso(occurred)
    assert {"phoneNumber": sha256(PHONE_E164)} in google["userData"]["userIdentifiers"]
    assert platforms.meta.requests == []
    # The other windows: TikTok takes 28 days, GA4 72 hours.
    assert got[(event_id, "tiktok")] == ("delivered", None)
    ga4_status, ga4_reason = got[(event_id, "ga4")]
    assert ga4_status == "skipped" and ga4_reason is not None and "72 hours" in ga4_reason
