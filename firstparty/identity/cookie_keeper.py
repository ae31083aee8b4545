"""Cookie keeper: re-set the ad platforms' cookies from an HTTP response, so ITP does not cap them.

Safari caps cookies written by `document.cookie` to 7 days (1 day after an ad click); the same
cookie written by a first-party `Set-Cookie` is not capped. So, when `cookie.keeper` is on, each
answer to a browser re-sets `_fbp`, `_ttp`, `_ga`, `_gcl_aw` (and `_fbc`, see below) with their
current value and a long Max-Age on the configured parent domain.

Not HttpOnly: the platforms' own scripts must keep reading them. Only with `cookie.domain` set:
a host-only copy on the tracker host would be a second cookie the pixels never see.

`_fbc` follows Meta's rule: written only when a new `fbclid` arrives, as `fb.1.<ms>.<fbclid>`
(1: the cookie sits on example.com), never re-dated or rebuilt from an old one. A value written
by Meta's Parameter Builder (`fb.1.<ms>.<fbclid>.<appendix>`) is compared on its fbclid part and
re-set byte-exact. `_fbp` is only ever re-set with the browser's own value, never minted: the
pixel (or Parameter Builder) owns it, and a second one would split the browser in two for Meta.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime

from firstparty import platforms
from firstparty.settings import CookieSettings

# Every pixel cookie but `_fbc`, which follows Meta's rule instead (see above).
FBC = platforms.pixel_cookie("_fbc")
KEPT = tuple(cookie for cookie in platforms.PIXEL_COOKIES if cookie != FBC)
CLICK_ID = re.compile(r"^[A-Za-z0-9._\-]{1,500}$")


def headers(
    settings: CookieSettings,
    *,
    context: Mapping[str, str],
    request_cookies: Mapping[str, str],
    new_fbclid: str | None,
    now: datetime,
) -> list[str]:
    """The Set-Cookie values to add to a browser's answer (empty when the keeper is off).

    `context` is the event's context (the tracker's reading of document.cookie); a cookie the
    browser sent with the request wins over it. `new_fbclid` is the fbclid of the event's URL.
    """
    if not settings.keeper or not settings.domain:
        return []
    out = []
    for cookie in KEPT:
        value = request_cookies.get(cookie.name) or context.get(cookie.field)
        if value and cookie.shape.match(value):
            out.append(_set_cookie(settings, cookie.name, value))
    current = request_cookies.get(FBC.name) or context.get(FBC.field)
    fbc = fbc_value(new_fbclid, current, now, subdomain_index=settings.domain.strip(".").count("."))
    if fbc is not None:
        out.append(_set_cookie(settings, FBC.name, fbc))
    return out


def fbc_value(
    fbclid: str | None, current: str | None, now: datetime, *, subdomain_index: int = 1
) -> str | None:
    """A new `_fbc` for this fbclid, or None when there is none or the current one carries it.

    `subdomain_index` is Meta's count of the cookie domain's dots: 1 for example.com.
    """
    if not fbclid or not CLICK_ID.match(fbclid):
        return None
    if current and current.split(".")[3:4] == [fbclid]:
        return None  # the same click again: keep the original creation time (and any appendix)
    return platforms.fbc(fbclid, now, subdomain_index=subdomain_index)


def _set_cookie(settings: CookieSettings, name: str, value: str) -> str:
    parts = [
        f"{name}={value}",
        f"Max-Age={settings.max_age_days * 86400}",
        f"Domain={settings.domain}",
        "Path=/",
        "SameSite=Lax",
    ]
    if settings.secure:
        parts.append("Secure")
    return "; ".join(parts)
