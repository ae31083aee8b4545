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
