"""Issue 11 end to end: what the door corrects is what the platform fakes receive.

A CRM purchase with a numeric-string value, a lower-case currency, a phone it hashed itself, a
US state by name, postal code and country, a gender we cannot use and the lead's gclid from
days ago; the real app, a real worker and the four platform fakes (tests/fakes), on SQLite and
on PostgreSQL + Redis.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from tests.e2e.conftest import deployment, platforms  # noqa: F401  (fixtures)
from tests.e2e.journey import (
    LAPTOP_UA,
    PURCHASE_ACTION,
    SITE,
    Deployment,
    Platforms,
    all_settled,
    iso,
    outcomes,
    serving,
    sha256,
    whole_seconds_ago,
)

PHONE_E164 = "+16175550100"
GCLID = "Cj0KCQiA-crm-lead-gclid"


async def test_a_crm_purchase_reaches_the_platforms_corrected(
    deployment: Deployment,  # noqa: F811
    platforms: Platforms,  # noqa: F811
) -> None:
    settings = deployment.settings(destinations=platforms.destinations())
    occurred = whole_seconds_ago(3600)
    clicked = occurred - timedelta(days=2)
    event_id = str(uuid.uuid4())
    event = {
        "type": "track",
        "name": "Purchase",
        "event_id": event_id,
        "timestamp": iso(occurred),
        "url": f"{SITE}/checkout/done",
        "properties": {"value": "49.90", "currency": "usd", "order_id": "o-1"},
        "user": {
            "email": "Jane@Example.com",
            "phone": sha256(PHONE_E164),  # hashed by the CRM
            "first_name": "Jane",
            "last_name": "Doe",
            "state": "Massachusetts",
            "zip": "02139-4307",
            "country": "us",
            "gender": "other",
        },
        "context": {
            "ip": "203.0.113.9",
            "user_agent": LAPTOP_UA,
            "click_ids": {"gclid": GCLID, "clicked_at": iso(clicked)},
        },
    }
    async with serving(settings) as app:
        answer = await app.http.post(
            "/v1/events", json=event, headers={"X-Write-Key": "wk_server_test_key_secret"}
        )
        assert answer.status_code == 202, answer.text
        assert [w["field"] for w in answer.json()["warnings"]] == ["user.gender"]
        await all_settled(app.engine, count=4)
        got = outcomes(app.engine)
    assert got[(event_id, "google")] == ("delivered", None), got
    assert got[(event_id, "meta")] == ("delivered", None), got
    assert got[(event_id, "tiktok")] == ("delivered", None), got

    [meta] = platforms.meta_events("Purchase")
    assert meta["custom_data"]["value"] == 49.9 and meta["custom_data"]["currency"] == "USD"
    assert meta["user_data"]["ph"] == [sha256(PHONE_E164)]  # the caller's hash reaches Meta
    assert meta["user_data"]["st"] == [sha256("ma")]  # Meta wants the two-letter code
    assert meta["user_data"]["zp"] == [sha256("02139")]
    assert "ge" not in meta["user_data"]

    [tiktok] = platforms.tiktok_events("Purchase")
    assert tiktok["properties"]["value"] == 49.9 and tiktok["properties"]["currency"] == "USD"
    assert tiktok["user"]["phone"] == sha256(PHONE_E164)

    [google] = platforms.google_events()
    assert google["adIdentifiers"] == {"gclid": GCLID}  # the lead's click, from the CRM
    assert google["conversionValue"] == 49.9 and google["currency"] == "USD"
    identifiers = google["userData"]["userIdentifiers"]
    assert {"phoneNumber": sha256(PHONE_E164)} in identifiers
    [address] = [i["address"] for i in identifiers if "address" in i]
    assert (address["postalCode"], address["regionCode"]) == ("02139", "US")
    assert list(platforms.google.ingested) == [(PURCHASE_ACTION, event_id)]
