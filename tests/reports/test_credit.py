"""The credit of one conversion (pure): which device's touch counts first and last, when it is
cross-device, and which platforms' clicks count and are recovered, at the windows' edges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from firstparty.reports import credit

AT = datetime(2026, 11, 20, 12, tzinfo=UTC)
EMAIL = {"utm": {"utm_source": "news", "utm_medium": "email"}}
ADS = {"click_ids": {"gclid": "G1"}}


def device(
    name: str, days_ago: float, first: dict[str, Any], last: dict[str, Any]
) -> credit.Device:
    seen = AT - timedelta(days=days_ago)
    return credit.Device(name, seen, first | {"at": seen.isoformat()}, last)


def touch_at(days_ago: float, touch: dict[str, Any]) -> dict[str, Any]:
    return touch | {"at": (AT - timedelta(days=days_ago)).isoformat()}


def clicks(*rows: tuple[str, str, float]) -> credit.Clicks:
    return credit.Clicks([credit.Click(v, kind, AT - timedelta(days=d)) for v, kind, d in rows])


def test_first_touch_on_the_earliest_device_last_non_direct_on_any() -> None:
    laptop = device("laptop", 5, ADS, touch_at(5, ADS))
    phone = device("phone", 1, {}, touch_at(1, EMAIL))
    found = credit.credit(credit.Conversion(AT, "phone", {}), [phone, laptop], clicks())
    assert (found.first.channel, found.last.channel, found.cross_device) == (
        "paid_search",
        "email",
        True,
    )
    # The phone came direct: the laptop's ad is both first and last (non-direct) touch.
    direct_phone = device("phone", 1, {}, touch_at(1, {}))
    alone = credit.credit(credit.Conversion(AT, "phone", {}), [direct_phone, laptop], clicks())
    assert (alone.first.channel, alone.last.channel, alone.cross_device) == (
        "paid_search",
        "paid_search",
        True,
    )
    # A device first seen after the conversion does not count.
    later = device("tablet", -1, EMAIL, touch_at(-1, EMAIL))
    own = credit.credit(credit.Conversion(AT, "phone", {}), [direct_phone, later], clicks())
    assert (own.first.channel, own.last.channel, own.cross_device) == ("direct", "direct", False)
    nobody = credit.credit(credit.Conversion(AT, None, {}), [], clicks())
    assert (nobody.first.channel, nobody.cross_device) == ("unknown", False)


def test_clicks_count_within_their_window_and_up_to_the_clock_skew() -> None:
    me = [device("me", 100, {}, {})]
    convert = credit.Conversion(AT, "me", {})
    assert credit.credit(convert, me, clicks(("me", "gclid", 89))).clicked == ("google_ads",)
    assert credit.credit(convert, me, clicks(("me", "gclid", 91))).clicked == ()
    assert credit.credit(convert, me, clicks(("me", "ttclid", 29))).clicked == ()  # 28 days
    just_after = clicks(("me", "fbclid", -5 / 1440))  # 5 minutes after: a clock ahead
    assert credit.credit(convert, me, just_after).clicked == ("meta",)
    too_late = clicks(("me", "fbclid", -1))
    assert credit.credit(convert, me, too_late).clicked == ()
    others = clicks(("stranger", "gclid", 1))  # not one of the person's devices
    assert credit.credit(convert, me, others).clicked == ()


def test_recovered_reasons_judge_the_newest_click() -> None:
    me = [device("me", 30, {}, {})]
    old_then_new = clicks(("me", "gclid", 20), ("me", "gclid", 2))
    cookie = credit.Conversion(AT, "me", {"gcl_aw": "GCL.1.G"})
    assert credit.credit(cookie, me, old_then_new).recovered == ()  # newest: 2 days, cookie set
    aged = credit.credit(cookie, me, clicks(("me", "gclid", 8)))
    assert aged.recovered == (("google_ads", ("aged",)),)
    bare = credit.credit(credit.Conversion(AT, "me", {"fbp": "fb.1.1.1"}), me, old_then_new)
    assert bare.recovered == (("google_ads", ("no_cookie",)),)  # Meta's cookie is not Google's
