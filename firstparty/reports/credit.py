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


def credit(conversion: Conversion, devices: Sequence[Device], clicks: Sequence[Click]) -> Credit:
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
    return Credit(channels.attribute(first.first_touch), last[1], cross, clicked, tuple(recovered))


def _last(
    devices: Sequence[Device], own: str | None, until: datetime
) -> tuple[str, channels.Attribution]:
    """(device, attribution) of the latest non-direct last touch up to `until`."""
    best: tuple[datetime, str, channels.Attribution] | None = None
    for device in devices:
        at = _at(device.last_touch) or device.first_seen_at
        found = channels.attribute(device.last_touch)
        if found.channel is channels.Channel.DIRECT or at > until:
            continue
        if best is None or (at, device.visitor_id == own) > (best[0], best[1] == own):
            best = (at, device.visitor_id, found)
    if best is not None:
        return best[1], best[2]
    home = next((d for d in devices if d.visitor_id == own), devices[0])
    return home.visitor_id, channels.attribute(home.last_touch or home.first_touch)


def _recovered(
    conversion: Conversion, devices: set[str], clicks: Sequence[Click]
) -> tuple[tuple[str, ...], list[tuple[str, tuple[str, ...]]]]:
    at = conversion.occurred_at
    clicked: list[str] = []
    recovered: list[tuple[str, tuple[str, ...]]] = []
    for platform in RECOVERABLE:
        kinds = platforms.click_ids_of(platform)
        usable = [
            c
            for c in clicks
            if c.kind in kinds
            and c.visitor_id in devices
            and c.first_seen_at <= at + CLOCK_SKEW
            and at - c.first_seen_at <= platforms.window_of(c.kind)
        ]
        if not usable:
            continue
        clicked.append(platform.value)
        newest = max(usable, key=lambda c: c.first_seen_at)
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


def _at(touch: Mapping[str, Any]) -> datetime | None:
    raw = touch.get("at") if isinstance(touch, Mapping) else None
    if not isinstance(raw, str):
        return None
    try:
        return datetime.fromisoformat(raw)
    except ValueError:
        return None
