"""Factories shared by the tests: stored events as adapters see them, and adapters made the way
start-up makes them (a `[[destinations]]` entry parsed by the registry), pointed at the fakes.

    lead = factories.example(user={"em": JOHN}, url="https://www.example.com/contact")
    lead("ev-2", user={})                       # the example with one change
    lead.fresh("ev-3")                          # ... that occurred an hour ago
    factories.meta(test_event_code="T1")        # META_CAPI with one setting changed
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from firstparty.destinations import base, ga4_mp, google_ads, meta_capi, registry, tiktok_events
from firstparty.event import ClickId, Event
from firstparty.identity import pii
from tests.fakes import meta as fake_meta
from tests.fakes import tiktok as fake_tiktok

AT = datetime(2026, 1, 1, tzinfo=UTC)  # 1767225600
AdapterT = TypeVar("AdapterT", bound=base.Adapter)

# ---------------------------------------------------------------- events


def event(pk: str = "ev-1", **fields: Any) -> Event:
    """A stored browser Lead at AT with only the given fields set (event_id: `event-<pk>`)."""
    required: dict[str, Any] = {
        "pk": pk,
        "event_id": f"event-{pk}",
        "type": "track",
        "name": "Lead",
        "source": "www",
        "source_kind": "browser",
        "occurred_at": AT,
        "received_at": AT,
    }
    return Event(**(required | fields))


@dataclass(frozen=True)
class Example:
    """Stored events made from one example event's fields."""

    fields: Mapping[str, Any]

    def __call__(self, pk: str = "ev-1", **changes: Any) -> Event:
        """The example with these changes."""
        return event(pk, **(dict(self.fields) | changes))

    def fresh(self, pk: str = "ev-1", **changes: Any) -> Event:
        """The example from an hour ago, received now (the fakes judge age by the real clock)."""
        now = datetime.now(UTC)
        return self(pk, **({"occurred_at": now - timedelta(hours=1), "received_at": now} | changes))


def example(**fields: Any) -> Example:
    return Example(fields)


def rich_lead(at: datetime) -> Example:
    """A browser Lead at `at` with everything a platform could want: hashes, pixels, click ids."""
    clicks = tuple(
        ClickId(kind, value, at - timedelta(minutes=10))
        for kind, value in (
            ("gclid", "Cj0KCQiA-Contract"),
            ("fbclid", "IwAR-Contract"),
            ("ttclid", "E.C.P.Contract"),
        )
    )
    return example(
        occurred_at=at,
        received_at=at,
        url="https://www.example.com/apply",
        referrer="https://www.google.com/",
        title="Apply",
        properties={"value": 49.0, "currency": "USD"},
        user=pii.hash_user({"email": "Jane.Doe@gmail.com", "phone": "+1 650 555 1212"})
        | {"external_id": pii.sha256("crm-42")},
        context={
            "ip": "203.0.113.9",
            "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0 Safari/537.36",
            "fbp": "fb.1.1767000000000.1116446470",
            "ttp": "2F7h37YkS1j57AYSKTI7IHhJPYH",
            "ga": "GA1.1.1234567890.1767000000",
        },
        consent=dict.fromkeys(
            ("ad_user_data", "ad_personalization", "ad_storage", "analytics_storage"), "granted"
        ),
        visitor_id="visitor-contract",
        click_ids=clicks,
    )


# ---------------------------------------------------------------- adapters

# Entries for the types that forward the whole event and declare no `example_settings`.
FORWARDERS: dict[str, dict[str, Any]] = {
    "webhook": {
        "name": "hook",
        "type": "webhook",
        "url": "https://hooks.example.com/firstparty",
        "secret": "contract-webhook-secret-0123",
    },
    "fake": {"name": "fake", "type": "fake", "api_key": "contract-fake-api-key"},
}
FORWARDS_EVERYTHING = set(FORWARDERS)


def example_entry(kind: str) -> dict[str, Any]:
    """A type's minimal `[[destinations]]` entry: its `example_settings`, else FORWARDERS'."""
    entry = dict(registry.ADAPTERS[kind].example_settings) or FORWARDERS.get(kind)
    assert entry, f"{kind}: set `example_settings` on the adapter (or add it to FORWARDERS)"
    return entry


def example_adapter(kind: str) -> base.Adapter:
    return registry.adapter_for(registry.parse(example_entry(kind), 0))


META_CAPI: dict[str, Any] = {
    "name": "meta",
    "type": "meta_capi",
    "pixel_id": fake_meta.PIXEL_ID,
    "access_token": fake_meta.ACCESS_TOKEN,
    "events": {"page": "PageView", "Lead": "Lead", "Purchase": "Purchase"},
}
TIKTOK_EVENTS: dict[str, Any] = {
    "name": "tiktok",
    "type": "tiktok_events",
    "pixel_code": fake_tiktok.PIXEL_CODE,
    "access_token": fake_tiktok.ACCESS_TOKEN,
    "events": {"page": "Pageview", "Lead": "Lead", "Purchase": "Purchase"},
}
GOOGLE_CREDENTIALS = {
    "client_id": "1234.apps",
    "client_secret": "GOCSPX-x",
    "refresh_token": "1//0abc",
}
GOOGLE_ADS: dict[str, Any] = {
    "name": "google",
    "type": "google_ads",
    "customer_id": "123-456-7890",
    "login_customer_id": "9876543210",
    "conversion_actions": {"Lead": "987654321", "Purchase": "222222222"},
    "oauth": json.dumps(GOOGLE_CREDENTIALS),
}
GA4_MP: dict[str, Any] = {  # the fake GA4's default measurement id and secret
    "name": "ga4",
    "type": "ga4_mp",
    "measurement_id": "G-ABC123XYZ",
    "api_secret": "s3cr3t",
    "events": {"page": "page_view", "Lead": "generate_lead", "Purchase": "purchase"},
}


def adapter(cls: type[AdapterT], entry: Mapping[str, Any], **overrides: Any) -> AdapterT:
    """An adapter of this class made from a `[[destinations]]` entry, as at start-up."""
    made = registry.adapter_for(registry.parse(dict(entry) | overrides, 0))
    assert isinstance(made, cls)
    return made


def meta(**overrides: Any) -> meta_capi.MetaCapi:
    return adapter(meta_capi.MetaCapi, META_CAPI, **overrides)


def tiktok(**overrides: Any) -> tiktok_events.TikTokEvents:
    return adapter(tiktok_events.TikTokEvents, TIKTOK_EVENTS, **overrides)


def google(**overrides: Any) -> google_ads.GoogleAds:
    return adapter(google_ads.GoogleAds, GOOGLE_ADS, **overrides)


def ga4(**overrides: Any) -> ga4_mp.GA4MeasurementProtocol:
    return adapter(ga4_mp.GA4MeasurementProtocol, GA4_MP, **overrides)
