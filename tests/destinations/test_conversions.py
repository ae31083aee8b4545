"""Which events are conversions, per destination: the platforms' conversion events by default,
a destination's `conversions` list when it has one, never a page view."""

from __future__ import annotations

import pytest

from firstparty.destinations import registry
from tests import factories


@pytest.mark.parametrize(
    ("kind", "converts", "does_not"),
    [
        ("meta_capi", ["Purchase", "Lead", "Order Completed", "CompleteRegistration"],
         ["page", "ViewContent", "AddToCart", "InitiateCheckout"]),
        ("tiktok_events", ["Purchase", "Lead", "Signed Up"], ["page", "AddToCart"]),
        ("ga4_mp", ["Purchase", "Lead", "CompleteRegistration"], ["AddToCart", "ViewContent"]),
        ("google_ads", ["Lead", "Purchase", "Order Completed"], ["page", "AddToCart"]),
        ("webhook", ["Purchase", "Lead", "Signed Up"], ["page", "Clicked", "AddToCart"]),
        ("fake", ["Purchase"], ["page", "identify"]),
    ],
)  # fmt: skip
def test_default_conversions(kind: str, converts: list[str], does_not: list[str]) -> None:
    entry = {k: v for k, v in factories.example_entry(kind).items() if k != "events"}
    parsed = registry.parse(entry, 0)  # the type's default mapping
    assert [n for n in converts if not parsed.is_conversion(n)] == []
    assert [n for n in does_not if parsed.is_conversion(n)] == []


def test_a_conversions_list_overrides_the_default() -> None:
    entry = factories.META_CAPI | {"events": {"AddToCart": "AddToCart", "Purchase": "Purchase"}}
    parsed = registry.parse(entry | {"conversions": ["AddToCart"]}, 0)
    assert parsed.is_conversion("AddToCart") and not parsed.is_conversion("Purchase")
    hook = registry.parse(factories.FORWARDERS["webhook"] | {"conversions": ["Clicked"]}, 0)
    assert hook.is_conversion("Clicked") and not hook.is_conversion("Purchase")


def test_an_event_a_destination_does_not_take_is_no_conversion_there() -> None:
    entry = factories.META_CAPI | {"events": {"page": "PageView"}}
    assert not registry.parse(entry, 0).is_conversion("Purchase")
