"""Facts about the ad platforms that several packages share: click ids and pixel cookies.

Ingest reads click ids from landing URLs (`collect.touch`) and pixel cookies from the event's
`context` (`collect.schema.Context`); identity keeps them per device and re-sets the cookies
(`identity.cookie_keeper`); adapters send them on. The tracker (`tracker/fp.js`) repeats the
cookie names in JavaScript. tests/test_platforms.py checks that all of them agree with this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum


class Platform(StrEnum):
    GOOGLE_ADS = "google_ads"
    GOOGLE_ANALYTICS = "google_analytics"
    META = "meta"
    TIKTOK = "tiktok"
    MICROSOFT_ADS = "microsoft_ads"
    LINKEDIN = "linkedin"
    SNAPCHAT = "snapchat"
    PINTEREST = "pinterest"
    REDDIT = "reddit"


@dataclass(frozen=True)
class ClickKind:
    """A landing-URL parameter an ad platform adds to the links of its ads."""

    name: str  # as stored and sent (case matters: ScCid); matched case-insensitively in URLs
    platform: Platform
    window: timedelta  # how long after the click the platform still credits a conversion to it


@dataclass(frozen=True)
class PixelCookie:
    """A cookie an ad platform's browser tag sets; the tracker sends it in the event's context."""

    name: str  # the cookie: _fbp
    field: str  # its key in the event's `context`: fbp
    platform: Platform
    shape: re.Pattern[str]  # what the platform's own value looks like


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _days(n: int) -> timedelta:
    return timedelta(days=n)


CLICK_KINDS: tuple[ClickKind, ...] = (
    ClickKind("gclid", Platform.GOOGLE_ADS, _days(90)),  # click-through window up to 90 days
    ClickKind("gbraid", Platform.GOOGLE_ADS, _days(90)),
    ClickKind("wbraid", Platform.GOOGLE_ADS, _days(90)),
    ClickKind("fbclid", Platform.META, _days(90)),  # the _fbc cookie lives 90 days
    ClickKind("ttclid", Platform.TIKTOK, _days(28)),  # 28-day click-through attribution
    ClickKind("msclkid", Platform.MICROSOFT_ADS, _days(90)),
    ClickKind("li_fat_id", Platform.LINKEDIN, _days(90)),
    ClickKind("ScCid", Platform.SNAPCHAT, _days(28)),  # 28-day swipe window
    ClickKind("epik", Platform.PINTEREST, _days(30)),
    ClickKind("rdt_cid", Platform.REDDIT, _days(28)),
)
CLICK_IDS: tuple[str, ...] = tuple(kind.name for kind in CLICK_KINDS)
# For a kind stored before this table knew it.
DEFAULT_WINDOW = _days(90)

# Shapes: a value is echoed back in a Set-Cookie only if it looks like the platform's own.
PIXEL_COOKIES: tuple[PixelCookie, ...] = (
    PixelCookie(
        "_fbp", "fbp", Platform.META, re.compile(r"^fb\.\d\.\d{10,16}\.[A-Za-z0-9._\-]{1,200}$")
    ),
    PixelCookie(
        "_fbc", "fbc", Platform.META, re.compile(r"^fb\.\d\.\d{10,16}\.[A-Za-z0-9._\-]{1,500}$")
    ),
    PixelCookie("_ttp", "ttp", Platform.TIKTOK, re.compile(r"^[A-Za-z0-9._\-]{8,200}$")),
    PixelCookie(
        "_ga", "ga", Platform.GOOGLE_ANALYTICS, re.compile(r"^GA\d\.\d\.[A-Za-z0-9._\-]{1,200}$")
    ),
    PixelCookie(
        "_gcl_aw",
        "gcl_aw",
        Platform.GOOGLE_ADS,
        re.compile(r"^GCL\.\d{9,12}\.[A-Za-z0-9._\-]{1,500}$"),
    ),
)
PIXEL_FIELDS: tuple[str, ...] = tuple(cookie.field for cookie in PIXEL_COOKIES)


def window_of(kind: str) -> timedelta:
    """How long after the click a click id of this kind stays usable."""
    return next((k.window for k in CLICK_KINDS if k.name == kind), DEFAULT_WINDOW)


def click_ids_of(platform: Platform) -> tuple[str, ...]:
    return tuple(kind.name for kind in CLICK_KINDS if kind.platform == platform)


def pixel_cookie(name: str) -> PixelCookie:
    return next(cookie for cookie in PIXEL_COOKIES if cookie.name == name)


def fbc(fbclid: str, first_seen_at: datetime, *, subdomain_index: int = 1) -> str:
    """Meta's `_fbc` value for a click: `fb.<subdomain index>.<ms first seen>.<fbclid as is>`.

    The subdomain index counts the cookie domain's labels minus one: 1 for example.com.
    """
    millis = (first_seen_at - EPOCH) // timedelta(milliseconds=1)  # exact, unlike a float
    return f"fb.{subdomain_index}.{millis}.{fbclid}"


# ---------------------------------------------------------------- GA4 sessions

# gtag keeps the session in a `_ga_<container>` cookie per GA4 stream (container = the
# measurement id without "G-"): `GS1.1.<session_id>.<session_number>.…` (older) or
# `GS2.1.s<session_id>$o<session_number>$g…$t…` (current). fp.js parses them and sends
# `context.ga_session` = "<container>:<session_id>[:<session_number>]", joined by "," when the
# site has several streams.
GA_SESSION_COOKIE_PREFIX = "_ga_"
GA_SESSION_FIELD = "ga_session"
GA_SESSION = re.compile(
    r"^[A-Z0-9]{1,20}:\d{1,12}(?::\d{1,6})?(?:,[A-Z0-9]{1,20}:\d{1,12}(?::\d{1,6})?)*$"
)


@dataclass(frozen=True)
class GaSession:
    session_id: str
    session_number: int | None


def ga_sessions(value: str) -> dict[str, GaSession]:
    """The `ga_session` context value read per container; {} when it is not in that shape."""
    if not GA_SESSION.match(value or ""):
        return {}
    found: dict[str, GaSession] = {}
    for part in value.split(","):
        container, session_id, *number = part.split(":")
        found[container] = GaSession(session_id, int(number[0]) if number else None)
    return found


# ---------------------------------------------------------------- standard event names


# Each platform's own names (destinations.md §1.11, §2.10, §4.8); the defaults below use only these.
META_STANDARD_EVENTS = frozenset(
    [
        "PageView",
        "ViewContent",
        "Search",
        "AddToCart",
        "AddToWishlist",
        "InitiateCheckout",
        "AddPaymentInfo",
        "Purchase",
        "Lead",
        "CompleteRegistration",
        "Contact",
        "CustomizeProduct",
        "Donate",
        "FindLocation",
        "Schedule",
        "StartTrial",
        "SubmitApplication",
        "Subscribe",
    ]
)
# TikTok's help-center list; `Pageview` is what integrations send for a page view (§2.10).
TIKTOK_STANDARD_EVENTS = frozenset(
    [
        "AddPaymentInfo",
        "AddToCart",
        "AddToWishlist",
        "ApplicationApproval",
        "CompleteRegistration",
        "Contact",
        "CustomizeProduct",
        "Download",
        "FindLocation",
        "InitiateCheckout",
        "Lead",
        "Purchase",
        "Schedule",
        "Search",
        "StartTrial",
        "SubmitApplication",
        "Subscribe",
        "ViewContent",
        "Pageview",
    ]
)
GA4_RECOMMENDED_EVENTS = frozenset(
    [
        "generate_lead",
        "login",
        "sign_up",
        "purchase",
        "refund",
        "search",
        "share",
        "join_group",
        "earn_virtual_currency",
        "spend_virtual_currency",
        "select_content",
        "view_item",
        "view_item_list",
        "select_item",
        "add_to_cart",
        "remove_from_cart",
        "view_cart",
        "add_to_wishlist",
        "begin_checkout",
        "add_shipping_info",
        "add_payment_info",
        "view_promotion",
        "select_promotion",
        "page_view",
    ]
)


@dataclass(frozen=True)
class StandardEvent:
    """One kind of event as each ad platform names it (None: the platform has no such event).

    `ours` is the name firstparty's docs and examples use (Meta's, and `page` for page views);
    `segment` are Segment's spec names for it (segment.com/docs/connections/spec/ecommerce/v2,
    …/spec/b2b-saas), so Segment-shaped traffic maps without configuration.
    """

    ours: str
    segment: tuple[str, ...]
    meta: str | None  # Meta standard events (destinations.md §1.11)
    tiktok: str | None  # TikTok standard events (§2.10)
    ga4: str | None  # GA4 recommended events (§4.8)


STANDARD_EVENTS: tuple[StandardEvent, ...] = (
    # GA4 gets no page_view by default: gtag on the page already sends one (§4.5).
    StandardEvent("page", (), "PageView", "Pageview", None),
    StandardEvent("ViewContent", ("Product Viewed",), "ViewContent", "ViewContent", "view_item"),
    StandardEvent("ViewItemList", ("Product List Viewed",), None, None, "view_item_list"),
    StandardEvent("Search", ("Products Searched",), "Search", "Search", "search"),
    StandardEvent("AddToCart", ("Product Added",), "AddToCart", "AddToCart", "add_to_cart"),
    StandardEvent("RemoveFromCart", ("Product Removed",), None, None, "remove_from_cart"),
    StandardEvent("ViewCart", ("Cart Viewed",), None, None, "view_cart"),
    StandardEvent(
        "AddToWishlist",
        ("Product Added to Wishlist",),
        "AddToWishlist",
        "AddToWishlist",
        "add_to_wishlist",
    ),
    StandardEvent(
        "InitiateCheckout",
        ("Checkout Started",),
        "InitiateCheckout",
        "InitiateCheckout",
        "begin_checkout",
    ),
    StandardEvent(
        "AddPaymentInfo",
        ("Payment Info Entered",),
        "AddPaymentInfo",
        "AddPaymentInfo",
        "add_payment_info",
    ),
    StandardEvent("Purchase", ("Order Completed",), "Purchase", "Purchase", "purchase"),
    StandardEvent("Refund", ("Order Refunded",), None, None, "refund"),
    StandardEvent("Lead", (), "Lead", "Lead", "generate_lead"),
    StandardEvent(
        "CompleteRegistration",
        ("Signed Up", "Account Created"),
        "CompleteRegistration",
        "CompleteRegistration",
        "sign_up",
    ),
    StandardEvent("Login", ("Signed In",), None, None, "login"),
    StandardEvent("StartTrial", ("Trial Started",), "StartTrial", "StartTrial", None),
    StandardEvent("Subscribe", (), "Subscribe", "Subscribe", None),
    StandardEvent("Contact", (), "Contact", "Contact", None),
    StandardEvent("Schedule", (), "Schedule", "Schedule", None),
    StandardEvent("SubmitApplication", (), "SubmitApplication", "SubmitApplication", None),
    StandardEvent("Share", ("Product Shared",), None, None, "share"),
)


def _default_names(platform_name: str) -> dict[str, str]:
    names: dict[str, str] = {}
    for kind in STANDARD_EVENTS:
        target = getattr(kind, platform_name)
        if target:
            names.update(dict.fromkeys((kind.ours, *kind.segment), target))
    return names


# The `events` mapping a destination of each ad-platform type uses when its config gives none:
# our names and Segment's to the platform's standard events; other names are not sent.
# google_ads maps to our names, which its `conversion_actions` then turn into actions.
DEFAULT_EVENTS: dict[str, dict[str, str]] = {
    "meta_capi": _default_names("meta"),
    "tiktok_events": _default_names("tiktok"),
    "ga4_mp": _default_names("ga4"),
    "google_ads": {n: k.ours for k in STANDARD_EVENTS for n in (k.ours, *k.segment)},
}
# Never sent to an ad platform as an event, whatever its mapping says.
NEVER_SENT = frozenset({"identify"})

# The kinds of event that are conversions (a sale, a lead, a sign-up...), by our names: what the
# platforms optimise and bid on (Meta's conversion events, TikTok's, GA4's key events), unlike
# page views, views of a product or a cart. A destination's `conversions` setting overrides the
# list it gets from these (`default_conversions`); docs/admin.md says how reports use it.
CONVERSION_KINDS: frozenset[str] = frozenset(
    {
        "Purchase",
        "Lead",
        "CompleteRegistration",
        "StartTrial",
        "Subscribe",
        "SubmitApplication",
        "Schedule",
        "Contact",
    }
)
# Every mapped event is a conversion there: google_ads uploads only conversion actions.
ALL_MAPPED_CONVERT = frozenset({"google_ads"})


def default_conversions(destination_type: str) -> frozenset[str] | None:
    """The names (as the destination sends them) that are conversions by default; None: all.

    An ad platform's standard names for the conversion kinds (Meta `Purchase`, GA4
    `generate_lead`); a forwarder (webhook, fake) sends our names and Segment's, so those.
    """
    if destination_type in ALL_MAPPED_CONVERT:
        return None
    field = {"meta_capi": "meta", "tiktok_events": "tiktok", "ga4_mp": "ga4"}.get(destination_type)
    kinds = [kind for kind in STANDARD_EVENTS if kind.ours in CONVERSION_KINDS]
    if field is None:
        return frozenset(name for kind in kinds for name in (kind.ours, *kind.segment))
    return frozenset(name for kind in kinds if (name := getattr(kind, field)))


def legacy_conversion_names() -> frozenset[str]:
    """Incoming names counted as conversions for events stored before the rule was kept per
    event (migration 0012): our names and Segment's of the conversion kinds."""
    return default_conversions("webhook") or frozenset()


def default_events(destination_type: str) -> dict[str, str] | None:
    """The default name mapping of a destination type; None: it forwards every event."""
    return DEFAULT_EVENTS.get(destination_type)


def standard_name(event_name: str) -> str | None:
    """Our name for an incoming name (Segment's `Order Completed` → `Purchase`), or None."""
    return DEFAULT_EVENTS["google_ads"].get(event_name)
