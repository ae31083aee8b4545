"""Everyone who knows a platform fact agrees with `firstparty.platforms`: the tracker, ingest,
identity and every adapter."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from firstparty import platforms
from firstparty.collect import schema, touch
from firstparty.destinations import ga4_mp, google_ads, registry
from firstparty.event import ClickId, Event
from firstparty.identity import cookie_keeper
from firstparty.settings import CookieSettings
from firstparty.tracker import serve
from tests import factories

Platform = platforms.Platform
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
AT = NOW - timedelta(minutes=1)
# A sample value per pixel cookie, shaped like the platform's own, and what of it a platform
# adapter sends (the GA client id is the cookie's tail; Google takes the gclid out of _gcl_aw).
GCL_AW_GCLID = "Cj0KCQiA-gcl-aw-sample"
COOKIES = {
    "_fbp": ("fb.1.1767000000000.1116446470", "fb.1.1767000000000.1116446470"),
    "_fbc": ("fb.1.1767225000000.IwAR-fbc-sample", "fb.1.1767225000000.IwAR-fbc-sample"),
    "_ttp": ("2F7h37YkS1j57AYSKTI7IHhJPYH", "2F7h37YkS1j57AYSKTI7IHhJPYH"),
    "_ga": ("GA1.1.1234567890.1767000000", "1234567890.1767000000"),
    "_gcl_aw": (f"GCL.{int((AT - timedelta(days=1)).timestamp())}.{GCL_AW_GCLID}", GCL_AW_GCLID),
}
# The platform each ad-platform adapter speaks for; the others forward the whole event.
ADAPTER_PLATFORMS = {
    "meta_capi": Platform.META,
    "tiktok_events": Platform.TIKTOK,
    "google_ads": Platform.GOOGLE_ADS,
    "ga4_mp": Platform.GOOGLE_ANALYTICS,
}


def click_value(kind: str) -> str:
    return f"{kind}-Sample-Value"


def lead(*, clicks: tuple[str, ...] = (), cookies: tuple[str, ...] = ()) -> Event:
    """A consenting browser Lead carrying only these click ids and pixel cookies."""
    context = {platforms.pixel_cookie(name).field: COOKIES[name][0] for name in cookies} | {
        "ip": "203.0.113.9",
        "user_agent": "Mozilla/5.0",
    }
    click_ids = tuple(ClickId(k, click_value(k), AT - timedelta(minutes=10)) for k in clicks)
    return factories.rich_lead(AT)(context=context, click_ids=click_ids)


def sent(kind: str, event: Event) -> str:
    """Everything the adapter of this type would send for the event, as one text."""
    adapter = factories.example_adapter(kind)
    requests = adapter.build([event], "token" if adapter.needs_token else None)
    return " ".join(r.url + json.dumps(r.json) + (r.body or b"").decode() for r in requests)


def sent_by(kind: str) -> list[str]:
    """The click ids and cookies whose values this type's adapter sends when given every one."""
    every = lead(clicks=platforms.CLICK_IDS, cookies=tuple(COOKIES))
    text = sent(kind, every)
    clicks = [k for k in platforms.CLICK_IDS if click_value(k) in text]
    return clicks + [name for name, (_, out) in COOKIES.items() if out in text]


# ---------------------------------------------------------------- the tracker


def test_fp_js_reads_the_pixel_cookies_into_their_context_fields() -> None:
    source = serve.SOURCE.read_text()
    # fp.js reads cookie `_<field>` into context.<field> (the list is kept short for its size).
    found = re.search(r"PIXELS = \[([^\]]*)\]", source)
    assert found, "fp.js: the PIXELS list of context fields moved; update this test"
    fields = re.findall(r"'(\w+)'", found.group(1))
    assert {f"_{f}": f for f in fields} == {c.name: c.field for c in platforms.PIXEL_COOKIES}


def test_fp_js_keeps_no_click_id_list_of_its_own() -> None:
    # Click ids are read by the server from the event's url (collect.touch).
    source = serve.SOURCE.read_text()
    assert [k for k in platforms.CLICK_IDS if re.search(rf"\b{k}\b", source)] == []


# ---------------------------------------------------------------- ingest and identity


def test_the_ingest_context_has_a_field_per_pixel_cookie_and_the_ga4_sessions() -> None:
    fields = set(schema.Context.__struct_fields__) - {"ip", "user_agent", "click_ids"}
    assert fields == {*platforms.PIXEL_FIELDS, platforms.GA_SESSION_FIELD}


def test_fp_js_sends_the_ga4_sessions_in_their_context_field() -> None:
    source = serve.SOURCE.read_text()
    assert f"/(?:^|; ){platforms.GA_SESSION_COOKIE_PREFIX}(" in source  # the cookie's regex
    assert f"out.{platforms.GA_SESSION_FIELD} =" in source


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("ABC123:1767225000:3", {"ABC123": platforms.GaSession("1767225000", 3)}),
        (
            "ABC123:1767225000,XYZ9:1767000000:12",
            {
                "ABC123": platforms.GaSession("1767225000", None),
                "XYZ9": platforms.GaSession("1767000000", 12),
            },
        ),
        ("GS2.1.s1767225000$o3", {}),
        ("", {}),
    ],
)
def test_ga_session_values_are_read_per_container(
    value: str, expected: dict[str, platforms.GaSession]
) -> None:
    assert platforms.ga_sessions(value) == expected


def test_every_click_id_is_read_from_a_landing_url_in_its_stored_case() -> None:
    query = "&".join(f"{k.upper()}={click_value(k)}" for k in platforms.CLICK_IDS)
    clicks, _ = touch.parse(f"https://www.example.com/?{query}")
    assert clicks == {k: click_value(k) for k in platforms.CLICK_IDS}


def test_the_sample_cookies_have_their_platforms_shape() -> None:
    assert set(COOKIES) == {c.name for c in platforms.PIXEL_COOKIES}
    assert all(platforms.pixel_cookie(n).shape.match(v) for n, (v, _) in COOKIES.items())


def test_the_cookie_keeper_resets_every_pixel_cookie_and_fbc_for_a_new_click() -> None:
    settings = CookieSettings(domain="example.com", keeper=True)
    context = {platforms.pixel_cookie(n).field: v for n, (v, _) in COOKIES.items()}
    found = cookie_keeper.headers(
        settings, context=context, request_cookies={}, new_fbclid="IwAR-new", now=NOW
    )
    assert sorted(h.split("=", 1)[0] for h in found) == sorted(COOKIES)


# ---------------------------------------------------------------- adapters


def test_every_adapter_speaks_for_a_known_platform_or_forwards_everything() -> None:
    assert set(registry.ADAPTERS) == set(ADAPTER_PLATFORMS) | factories.FORWARDS_EVERYTHING


@pytest.mark.parametrize("kind", sorted(ADAPTER_PLATFORMS))
def test_an_adapter_sends_each_of_its_platforms_click_ids_and_cookies(kind: str) -> None:
    platform = ADAPTER_PLATFORMS[kind]
    for click in platforms.click_ids_of(platform):
        assert click_value(click) in sent(kind, lead(clicks=(click,))), click
    for cookie in (c.name for c in platforms.PIXEL_COOKIES if c.platform == platform):
        assert COOKIES[cookie][1] in sent(kind, lead(cookies=(cookie,))), cookie


@pytest.mark.parametrize("kind", sorted(ADAPTER_PLATFORMS))
def test_an_adapter_sends_no_other_platforms_click_ids_or_cookies(kind: str) -> None:
    platform = ADAPTER_PLATFORMS[kind]
    theirs = [k.name for k in platforms.CLICK_KINDS if k.platform != platform]
    theirs += [c.name for c in platforms.PIXEL_COOKIES if c.platform != platform]
    assert [name for name in sent_by(kind) if name in theirs] == []


@pytest.mark.parametrize("kind", sorted(factories.FORWARDS_EVERYTHING))
def test_a_forwarder_sends_every_click_id_and_cookie(kind: str) -> None:
    assert sent_by(kind) == [*platforms.CLICK_IDS, *COOKIES]


# ---------------------------------------------------------------- standard event names

SPEC = Path(__file__).parents[2] / "shared/specs/destinations.md"  # beside the repository
STANDARD = {  # each platform's names, and the spec section that lists them
    "meta_capi": (platforms.META_STANDARD_EVENTS, "### 1.11"),
    "tiktok_events": (platforms.TIKTOK_STANDARD_EVENTS, "### 2.10"),
    "ga4_mp": (platforms.GA4_RECOMMENDED_EVENTS, "### 4.8"),
}


def test_every_ad_platform_type_has_a_default_mapping_and_forwarders_none() -> None:
    assert set(platforms.DEFAULT_EVENTS) == set(ADAPTER_PLATFORMS)
    assert all(platforms.default_events(k) is None for k in factories.FORWARDS_EVERYTHING)


@pytest.mark.parametrize("kind", sorted(STANDARD))
def test_default_names_are_the_platforms_standard_events(kind: str) -> None:
    names = set(platforms.DEFAULT_EVENTS[kind].values())
    assert names <= STANDARD[kind][0]
    if kind == "ga4_mp":
        assert [n for n in names if ga4_mp.name_problem(n)] == []


@pytest.mark.parametrize("kind", sorted(STANDARD))
def test_the_standard_lists_are_the_specs(kind: str) -> None:
    if not SPEC.exists():
        pytest.skip(f"{SPEC} is not beside this checkout")
    section = SPEC.read_text().split(STANDARD[kind][1], 1)[1].split("\n### ", 1)[0]
    assert [n for n in STANDARD[kind][0] if f"`{n}`" not in section] == []


def test_segment_standard_names_map_to_the_platforms_events() -> None:
    expected = {
        "Order Completed": ("Purchase", "Purchase", "purchase", "Purchase"),
        "Signed Up": ("CompleteRegistration", "CompleteRegistration", "sign_up", None),
        "Product Added": ("AddToCart", "AddToCart", "add_to_cart", "AddToCart"),
        "Lead": ("Lead", "Lead", "generate_lead", "Lead"),
        "page": ("PageView", "Pageview", None, "page"),
    }
    for name, (meta, tiktok, ga4, google) in expected.items():
        names = tuple(
            platforms.DEFAULT_EVENTS[k].get(name)
            for k in ("meta_capi", "tiktok_events", "ga4_mp", "google_ads")
        )
        assert names == (meta, tiktok, ga4, google or names[3]), name


@pytest.mark.parametrize("kind", sorted(ADAPTER_PLATFORMS))
def test_without_a_mapping_raw_names_and_identify_are_not_sent(kind: str) -> None:
    entry = {k: v for k, v in factories.example_entry(kind).items() if k != "events"}
    adapter = registry.adapter_for(registry.parse(entry, 0))
    assert not adapter.wants("identify", "identify")
    assert not adapter.wants("track", "Some Custom Thing")
    if kind != "google_ads":  # its conversion_actions decide which of ours it takes
        assert adapter.wants("track", "Order Completed")


@pytest.mark.parametrize("kind", sorted(factories.FORWARDS_EVERYTHING))
def test_a_forwarder_without_a_mapping_takes_every_name(kind: str) -> None:
    adapter = factories.example_adapter(kind)
    assert adapter.wants("identify", "identify") and adapter.wants("track", "Anything")


def test_google_ads_chooses_among_exactly_googles_click_ids() -> None:
    assert sorted(google_ads.CLICK_KINDS) == sorted(platforms.click_ids_of(Platform.GOOGLE_ADS))
