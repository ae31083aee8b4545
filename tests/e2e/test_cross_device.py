"""Issue 5 end to end: one person on a laptop and a phone, proven by a code sent to their phone
(a fake Twilio), and conversions credited to the laptop's ad click — from the phone and from an
internal system naming the person two days later.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.e2e.journey import (
    PHONE_UA,
    PURCHASE_ACTION,
    SITE,
    Browser,
    Deployment,
    Platforms,
    admin,
    all_settled,
    backdate_visitor,
    epoch,
    iso,
    outcomes,
    server_send,
    serving,
    sha256,
    whole_seconds_ago,
)
from tests.fakes import twilio as fake_twilio
from tests.identity.conftest import otp_config

GCLID = "Cj0KCQiA-laptop_GCLID-0042"
FBCLID = "IwZXh0bgNhZW0BMABhZGlkAasLaptopFbClid_Mixed-Case"
FBP = "fb.1.1767000000000.987654321"
E164, NATIONAL, INTERNATIONAL = "+16175550100", "(617) 555-0100", "+1 617-555-0100"
LANDED_DAYS_AGO = 3
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


async def verify_phone(
    device: Browser, twilio: fake_twilio.FakeTwilio, phone: str
) -> dict[str, Any]:
    """Ask for a code, read it off the fake phone, send it back; the answer."""
    started = await device.post("/v1/otp/start", {"phone": phone})
    assert started.status_code == 202, started.text
    verified = await device.post("/v1/otp/verify", {"phone": phone, "code": twilio.last_code(E164)})
    assert verified.status_code == 200, verified.text
    body: dict[str, Any] = verified.json()
    return body


def meta_event(platforms: Platforms, event_id: str) -> dict[str, Any]:
    [found] = [e for e in platforms.meta.events if e["event_id"] == event_id]
    return found


def google_event(platforms: Platforms, event_id: str) -> dict[str, Any]:
    [found] = [e for e in platforms.google_events() if e["transactionId"] == event_id]
    return found


def check_attributed(
    platforms: Platforms, event_id: str, *, fbc: str, value: float, occurred: datetime | None
) -> None:
    """Meta got the laptop's fbc and the verified phone's hash; Google the laptop's gclid."""
    meta = meta_event(platforms, event_id)
    assert meta["event_name"] == "Purchase"
    assert meta["user_data"]["fbc"] == fbc
    assert meta["user_data"]["ph"] == [sha256(E164.removeprefix("+"))]
    assert meta["custom_data"]["value"] == value and meta["custom_data"]["currency"] == "USD"
    google = google_event(platforms, event_id)
    assert google["adIdentifiers"]["gclid"] == GCLID
    assert {"phoneNumber": sha256(E164)} in google["userData"]["userIdentifiers"]
    assert google["conversionValue"] == value and google["currency"] == "USD"
    assert (PURCHASE_ACTION, event_id) in platforms.google.ingested
    if occurred is not None:
        assert meta["event_time"] == epoch(occurred)
        assert google["eventTimestamp"] == iso(occurred)


async def test_a_person_on_two_devices_is_credited_to_the_laptops_click(
    deployment: Deployment, platforms: Platforms, twilio: fake_twilio.FakeTwilio
) -> None:
    destinations = [d for d in platforms.destinations() if d["name"] in ("meta", "google")]
    settings = deployment.settings(otp=otp_config(twilio), destinations=destinations)
    async with (
        serving(settings) as app,
        Browser(app, ip="198.51.100.7") as laptop,
        Browser(app, ip="203.0.113.9", user_agent=PHONE_UA) as phone,
    ):
        # The laptop lands from an ad (days ago) and proves the phone number.
        before = datetime.now(UTC)
        landed = await laptop.send(
            {
                "type": "page",
                "url": f"{SITE}/apply?gclid={GCLID}&fbclid={FBCLID}",
                "context": {"fbp": FBP},
            }
        )
        after = datetime.now(UTC)
        await all_settled(app.engine, count=1)  # its PageView went to Meta
        backdate_visitor(app.engine, landed["visitor_id"], timedelta(days=LANDED_DAYS_AGO))
        first = await verify_phone(laptop, twilio, INTERNATIONAL)

        # The phone, another cookie jar, proves the same number in its national form.
        await phone.send({"type": "page", "url": f"{SITE}/apply/continue"})
        second = await verify_phone(phone, twilio, NATIONAL)
        user_id = first["user_id"]
        assert second["user_id"] == user_id

        # The fbclid's first-seen time, as stored for the laptop.
        page = await admin(app, f"/v1/admin/events/{landed['id']}")
        [click] = [c for c in page["visitor"]["click_ids"] if c["kind"] == "fbclid"]
        seen = datetime.fromisoformat(click["first_seen_at"])
        shift = timedelta(days=LANDED_DAYS_AGO)
        assert before - shift <= seen <= after - shift
        fbc = f"fb.1.{(seen - EPOCH) // timedelta(milliseconds=1)}.{FBCLID}"

        # A Purchase on the phone, carrying no user data at all (the page URL, as fp.js sends).
        on_phone = await phone.send(
            {
                "type": "track",
                "name": "Purchase",
                "event_id": str(uuid.uuid4()),
                "url": f"{SITE}/checkout/done",
                "properties": {"value": 129.5, "currency": "USD"},
            }
        )
        assert on_phone["visitor_id"] != landed["visitor_id"]

        # Two days later the back office reports purchases of two days ago, naming the person.
        two_days_ago = whole_seconds_ago(2 * 86400)
        named = {
            "national phone": {"user": {"phone": NATIONAL}},
            "international phone": {"user": {"phone": INTERNATIONAL}},
            "user_id": {"user_id": user_id},
        }
        reported: dict[str, str] = {}
        for how, person in named.items():
            answer = await server_send(
                app,
                {
                    "type": "track",
                    "name": "Purchase",
                    "event_id": f"order-{uuid.uuid4().hex[:12]}",
                    "timestamp": iso(two_days_ago),
                    "properties": {"value": 80.0, "currency": "USD"},
                    **person,
                },
            )
            reported[how] = answer["event_id"]
        await all_settled(app.engine, count=2 + 2 + 3 * 2)
        got = outcomes(app.engine)
        assert {status for status, _ in got.values()} == {"delivered"}, got

        check_attributed(platforms, on_phone["event_id"], fbc=fbc, value=129.5, occurred=None)
        assert meta_event(platforms, on_phone["event_id"])["user_data"]["fbp"] == FBP
        for how, event_id in reported.items():
            assert meta_event(platforms, event_id)["action_source"] == "system_generated", how
            check_attributed(platforms, event_id, fbc=fbc, value=80.0, occurred=two_days_ago)

        listed = await admin(app, "/v1/admin/events", user_id=user_id)
        items = listed["items"]
        assert {i["user_id"] for i in items} == {user_id}
        assert {i["event_id"] for i in items} == {on_phone["event_id"], *reported.values()}
