"""Who gets the credit for a conversion: first and last touch of the person, cross-device, and
what browser-only tracking would have lost. Pure: the reads are in `conversion_rollups`.

The person is the converting visitor plus, when the event has a verified user (`user_id`), the
visitors linked to that user when the conversion is stored (a device first seen after the
conversion does not count).

- First touch: the first touch of the person's earliest device (whatever its channel).
- Last touch: the latest last touch of the person's devices that is not direct, as of the
  conversion; direct only when no device ever came from anywhere else (last non-direct touch).
- Cross-device: the converting visitor is not the device of its first or of its last touch.
- Recovered, per ad platform with both click ids and a pixel cookie (Meta, TikTok, Google Ads):
  the person has a click id of the platform within its window, and the browser pixel alone
  would likely have missed it: the event carries no pixel cookie of the platform
  (`no_cookie`), the click is older than Safari's 7-day cap on script-set cookies (`aged`),
  or it was made on another device (`other_device`).
"""

from __future__ import annotations

import bisect
import functools
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from firstparty import platforms
from firstparty.reports import channels

CLOCK_SKEW = timedelta(minutes=10)
SAFARI_COOKIE_CAP = timedelta(days=7)  # ITP: cookies set by script expire after 7 days
P = platforms.Platform
RECOVERABLE: tuple[P, ...] = tuple(
    p
    for p in P
    if p in {c.platform for c in platforms.PIXEL_COOKIES}
    and p in {k.platform for k in platforms.CLICK_KINDS}
)
REASONS = ("no_cookie", "aged", "other_device")


@dataclass(frozen=True)
class Device:
    """One visitor of the person, as its row says."""

    visitor_id: str
    first_seen_at: datetime
    first_touch: Mapping[str, Any]
    last_touch: Mapping[str, Any]

    @functools.cached_property
    def first(self) -> channels.Attribution:
        """Its first touch's attribution, worked out once per batch (conversions share it)."""
        return channels.attribute(self.first_touch)

    @functools.cached_property
    def last(self) -> tuple[datetime, channels.Attribution]:
        """When its last touch was, and its attribution."""
        at = _at(self.last_touch) or self.first_seen_at
        return at, channels.attribute(self.last_touch or self.first_touch)


@dataclass(frozen=True)
class Click:
    visitor_id: str
    kind: str
    first_seen_at: datetime


@dataclass(frozen=True)
class Conversion:
    """What the rollup needs of one converting event."""

    occurred_at: datetime
    visitor_id: str | None
    context: Mapping[str, Any]


@dataclass(frozen=True)
class Credit:
    first: channels.Attribution
    last: channels.Attribution
    cross_device: bool
    clicked: tuple[str, ...]  # platforms with a click id in window
    recovered: tuple[tuple[str, tuple[str, ...]], ...]  # (platform, reasons), reasons non-empty


def credit(conversion: Conversion, devices: Sequence[Device], clicks: Clicks) -> Credit:
    """The credit of one conversion, given the person's devices and their click ids."""
    until = conversion.occurred_at + CLOCK_SKEW
    own = conversion.visitor_id
    known = [d for d in devices if d.visitor_id == own or d.first_seen_at <= until]
    if not known:
        return Credit(channels.NO_DEVICE, channels.NO_DEVICE, False, (), ())
    first = min(known, key=lambda d: (d.first_seen_at, d.visitor_id != own, d.visitor_id))
    last = _last(known, own, until)
    cross = own is not None and own in {d.visitor_id for d in known}
    cross = cross and (first.visitor_id != own or last[0] != own)
    clicked, recovered = _recovered(conversion, {d.visitor_id for d in known}, clicks)
    return Credit(first.first, last[1], cross, clicked, tuple(recovered))


def _last(
    devices: Sequence[Device], own: str | None, until: datetime
) -> tuple[str, channels.Attribution]:
    """(device, attribution) of the latest non-direct last touch up to `until`."""
    best: tuple[datetime, str, channels.Attribution] | None = None
    for device in devices:
        at, found = device.last
        if found.channel is channels.Channel.DIRECT or at > until:
            continue
        if best is None or (at, device.visitor_id == own) > (best[0], best[1] == own):
            best = (at, device.visitor_id, found)
    if best is not None:
        return best[1], best[2]
    home = next((d for d in devices if d.visitor_id == own), devices[0])
    return home.visitor_id, home.last[1]


class Clicks:
    """The click ids of a batch's devices, by device and platform, oldest first: the newest
    usable one of a conversion is found by bisection, whatever the number of clicks."""

    def __init__(self, clicks: Sequence[Click]) -> None:
        kinds = {k.name: k.platform for k in platforms.CLICK_KINDS}
        found: dict[tuple[str, P], list[Click]] = defaultdict(list)
        for click in clicks:
            platform = kinds.get(click.kind)
            if platform in RECOVERABLE:
                found[(click.visitor_id, platform)].append(click)
        for ordered in found.values():
            ordered.sort(key=_first_seen)
        self._by = dict(found)

    def newest(self, devices: set[str], platform: P, at: datetime) -> Click | None:
        """The devices' newest click of the platform seen by `at` (with the clock skew) and
        still within its window."""
        best: Click | None = None
        for visitor_id in devices:
            ordered = self._by.get((visitor_id, platform), [])
            index = bisect.bisect_right(ordered, at + CLOCK_SKEW, key=_first_seen)
            click = ordered[index - 1] if index else None  # a platform's kinds share a window
            if click is None or at - click.first_seen_at > platforms.window_of(click.kind):
                continue
            if best is None or click.first_seen_at > best.first_seen_at:
                best = click
        return best


def _recovered(
    conversion: Conversion, devices: set[str], clicks: Clicks
) -> tuple[tuple[str, ...], list[tuple[str, tuple[str, ...]]]]:
    at = conversion.occurred_at
    clicked: list[str] = []
    recovered: list[tuple[str, tuple[str, ...]]] = []
    for platform in RECOVERABLE:
        newest = clicks.newest(devices, platform, at)
        if newest is None:
            continue
        clicked.append(platform.value)
        cookies = [c.field for c in platforms.PIXEL_COOKIES if c.platform == platform]
        reasons = {
            "no_cookie": not any(conversion.context.get(field) for field in cookies),
            "aged": at - newest.first_seen_at > SAFARI_COOKIE_CAP,
            "other_device": newest.visitor_id != conversion.visitor_id,
        }
        found = tuple(reason for reason in REASONS if reasons[reason])
        if found:
            recovered.append((platform.value, found))
    return tuple(clicked), recovered


def _first_seen(click: Click) -> datetime:
    return click.first_seen_at


def _at(touch: Mapping[str, Any]) -> datetime | None:
    raw = touch.get("at") if isinstance(touch, Mapping) else None
    if not isinstance(raw, str):
        return None
    try:
        return datetime.fromisoformat(raw)
    except ValueError:
        return None
