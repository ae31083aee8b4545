"""Click ids and UTM parameters from a landing URL: what a visit came from.

Values are kept byte-exact (Meta rejects an fbclid whose case changed). The landing URL is the
event's `url`, else the request's Referer header (the page that sent the beacon).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from firstparty import platforms

UTM = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content", "utm_id")
_CANONICAL = {name.lower(): name for name in platforms.CLICK_IDS}
MAX_VALUE = 500


def parse(url: str | None) -> tuple[dict[str, str], dict[str, str]]:
    """(click ids, utm parameters) found in the URL's query string; the first value of each wins."""
    if not url:
        return {}, {}
    try:
        query = urlsplit(url).query
    except ValueError:
        return {}, {}
    clicks: dict[str, str] = {}
    utm: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=False):
        kind = _CANONICAL.get(key.lower())
        if kind and kind not in clicks and len(value) <= MAX_VALUE:
            clicks[kind] = value
        elif key.lower() in UTM and key.lower() not in utm:
            utm[key.lower()] = value[:MAX_VALUE]
    return clicks, utm


def kind_of(key: str) -> str | None:
    """The canonical name of a click id parameter ("GCLID" -> "gclid"), if it is one."""
    return _CANONICAL.get(key.lower())


def touch(
    *,
    url: str | None,
    referrer: str | None,
    at: datetime,
    clicks: dict[str, str],
    utm: dict[str, str],
) -> dict[str, Any]:
    """The record of one touch, as kept on the visitor (first and latest)."""
    return {
        "at": at.isoformat(),
        "landing_url": url,
        "referrer": referrer,
        "utm": utm,
        "click_ids": clicks,
    }


def is_campaign(
    referrer: str | None, url: str | None, clicks: dict[str, str], utm: dict[str, str]
) -> bool:
    """Whether this event marks a new touch: a click id, UTM tags, or a referrer from elsewhere."""
    if clicks or utm:
        return True
    if not referrer or not url:
        return False
    try:
        return urlsplit(referrer).hostname != urlsplit(url).hostname
    except ValueError:
        return False
