"""People made through the real app: browsers sending events to /v1/events, one person verified
on a laptop and a phone through the OTP flow (a fake Twilio), lone visitors with their own
cookies, and a visitor who landed from a Google ad."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tests.conftest import AppClient
from tests.e2e.journey import PHONE_UA, SITE, Browser
from tests.e2e.test_cross_device import E164, verify_phone
from tests.fakes import twilio as fake_twilio

GRANTED = {"ad_user_data": "granted", "ad_personalization": "granted"}
DENIED = {"ad_user_data": "granted", "ad_personalization": "denied"}


def lead(
    value: float, email: str | None = None, consent: Mapping[str, str] = GRANTED
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "track",
        "name": "Lead",
        "url": f"{SITE}/apply",
        "properties": {
            "value": value,
            "currency": "USD",
            "plan": "pro" if value >= 100 else "free",
        },
        "consent": dict(consent),
    }
    if email:
        event["user"] = {"email": email}
    return event


def named(name: str, consent: Mapping[str, str] = GRANTED, **more: Any) -> dict[str, Any]:
    return {"type": "track", "name": name, "url": f"{SITE}/x", "consent": dict(consent), **more}


@dataclass(frozen=True)
class Cast:
    """The member keys of the people `cast` made."""

    person: str  # u:<user id>: laptop + phone, verified, Lead 150 from the laptop
    laptop: str  # its visitors
    phone: str
    small: str  # v:<id>: Lead 50, granted
    private: str  # v:<id>: Lead 200, ad_personalization denied
    buyer: str  # v:<id>: Lead 120 then Purchase
    googler: str  # v:<id>: landed from a Google ad (utm_source=google, gclid), Lead 80
    browsing: str  # v:<id>: page views only


async def cast(app: AppClient, twilio: fake_twilio.FakeTwilio) -> Cast:
    """Make the people every audience test reads."""
    async with (
        Browser(app) as laptop,
        Browser(app, "198.51.100.8", PHONE_UA) as phone,
        Browser(app, "198.51.100.9") as small,
        Browser(app, "198.51.100.10") as private,
        Browser(app, "198.51.100.11") as buyer,
        Browser(app, "198.51.100.12") as googler,
        Browser(app, "198.51.100.13") as browsing,
    ):
        laptop_id = (await laptop.send({"type": "page", "url": SITE, "consent": GRANTED}))[
            "visitor_id"
        ]
        phone_id = (await phone.send({"type": "page", "url": SITE, "consent": GRANTED}))[
            "visitor_id"
        ]
        user_id = (await verify_phone(laptop, twilio, E164))["user_id"]
        await verify_phone(phone, twilio, E164)
        await laptop.send(lead(150, "Jane.Doe@example.com"))
        small_id = (await small.send(lead(50, "small@example.com")))["visitor_id"]
        private_id = (await private.send(lead(200, "private@example.com", DENIED)))["visitor_id"]
        buyer_id = (await buyer.send(lead(120, "buyer@example.com")))["visitor_id"]
        await buyer.send(named("Purchase", properties={"value": 120, "currency": "USD"}))
        landing = f"{SITE}/?utm_source=google&utm_medium=cpc&gclid=Cj0KCQiA-aud"
        googler_id = (await googler.send({"type": "page", "url": landing, "consent": GRANTED}))[
            "visitor_id"
        ]
        await googler.send(lead(80, "googler@example.com"))
        browsing_id = (await browsing.send({"type": "page", "url": SITE, "consent": GRANTED}))[
            "visitor_id"
        ]
    return Cast(
        person=f"u:{user_id}",
        laptop=laptop_id,
        phone=phone_id,
        small=f"v:{small_id}",
        private=f"v:{private_id}",
        buyer=f"v:{buyer_id}",
        googler=f"v:{googler_id}",
        browsing=f"v:{browsing_id}",
    )
