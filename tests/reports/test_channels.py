"""The channel rules, table-tested: each row a stored touch and the channel it must get."""

from __future__ import annotations

from typing import Any

import pytest

from firstparty.reports import channels
from firstparty.reports.channels import Channel

SITE = "https://www.example.test/landing"


def touch(
    utm: dict[str, str] | None = None,
    clicks: dict[str, str] | None = None,
    referrer: str | None = None,
    url: str = SITE,
) -> dict[str, Any]:
    return {"landing_url": url, "referrer": referrer, "utm": utm or {}, "click_ids": clicks or {}}


CASES: list[tuple[str, dict[str, Any], Channel]] = [
    ("fbclid", touch(clicks={"fbclid": "F1"}), Channel.PAID_SOCIAL),
    ("ttclid", touch(clicks={"ttclid": "T1"}), Channel.PAID_SOCIAL),
    (
        "cpc from facebook",
        touch({"utm_source": "facebook", "utm_medium": "cpc"}),
        Channel.PAID_SOCIAL,
    ),
    (
        "paid_social medium",
        touch({"utm_source": "x", "utm_medium": "Paid_Social"}),
        Channel.PAID_SOCIAL,
    ),
    (
        "cpc with an instagram referrer",
        touch({"utm_medium": "cpc"}, referrer="https://l.instagram.com/"),
        Channel.PAID_SOCIAL,
    ),
    ("gclid", touch(clicks={"gclid": "G1"}), Channel.PAID_SEARCH),
    ("gbraid", touch(clicks={"gbraid": "B1"}), Channel.PAID_SEARCH),
    ("wbraid", touch(clicks={"wbraid": "W1"}), Channel.PAID_SEARCH),
    ("msclkid", touch(clicks={"msclkid": "M1"}), Channel.PAID_SEARCH),
    (
        "gclid with a google referrer",
        touch(clicks={"gclid": "G1"}, referrer="https://www.google.com/"),
        Channel.PAID_SEARCH,
    ),
    ("cpc from google", touch({"utm_source": "google", "utm_medium": "cpc"}), Channel.PAID_SEARCH),
    ("ppc", touch({"utm_source": "bing", "utm_medium": "PPC"}), Channel.PAID_SEARCH),
    ("display", touch({"utm_source": "dv360", "utm_medium": "display"}), Channel.DISPLAY),
    ("cpm", touch({"utm_source": "network", "utm_medium": "cpm"}), Channel.DISPLAY),
    ("email", touch({"utm_source": "news", "utm_medium": "email"}), Channel.EMAIL),
    ("newsletter source", touch({"utm_source": "newsletter"}), Channel.EMAIL),
    ("affiliate", touch({"utm_source": "partner", "utm_medium": "affiliate"}), Channel.AFFILIATE),
    (
        "social medium",
        touch({"utm_source": "mastodon", "utm_medium": "social"}),
        Channel.ORGANIC_SOCIAL,
    ),
    ("facebook referrer", touch(referrer="https://m.facebook.com/story"), Channel.ORGANIC_SOCIAL),
    ("t.co referrer", touch(referrer="https://t.co/abc"), Channel.ORGANIC_SOCIAL),
    ("google referrer", touch(referrer="https://www.google.com/"), Channel.ORGANIC_SEARCH),
    ("google.de referrer", touch(referrer="https://www.google.de/"), Channel.ORGANIC_SEARCH),
    ("duckduckgo referrer", touch(referrer="https://duckduckgo.com/"), Channel.ORGANIC_SEARCH),
    ("brave search", touch(referrer="https://search.brave.com/search?q=x"), Channel.ORGANIC_SEARCH),
    ("another site", touch(referrer="https://blog.other.test/post"), Channel.REFERRAL),
    (
        "referral medium",
        touch({"utm_source": "partner", "utm_medium": "referral"}),
        Channel.REFERRAL,
    ),
    (
        "unknown tags",
        touch({"utm_source": "podcast", "utm_medium": "audio"}),
        Channel.OTHER_CAMPAIGN,
    ),
    ("nothing", touch(), Channel.DIRECT),
    ("own site referrer", touch(referrer="https://www.example.test/other"), Channel.DIRECT),
    ("broken referrer", touch(referrer="http://[::1"), Channel.DIRECT),
    ("not a touch", {}, Channel.DIRECT),
]


@pytest.mark.parametrize(("stored", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_channel_rules(stored: dict[str, Any], expected: Channel) -> None:
    assert channels.channel_of(stored) is expected


def test_source_medium_campaign_fall_back_to_what_the_click_or_referrer_says() -> None:
    tagged = channels.attribute(
        touch({"utm_source": "News", "utm_medium": "Email", "utm_campaign": "Spring"})
    )
    assert (tagged.source, tagged.medium, tagged.campaign) == ("news", "email", "spring")
    google = channels.attribute(touch(clicks={"gclid": "G1"}))
    assert (google.channel, google.source, google.medium) == (Channel.PAID_SEARCH, "google", "cpc")
    meta = channels.attribute(touch(clicks={"fbclid": "F1"}))
    assert (meta.source, meta.medium) == ("facebook", "paid")
    search = channels.attribute(touch(referrer="https://www.bing.com/search"))
    assert (search.source, search.medium) == ("bing.com", "organic")
    direct = channels.attribute(touch())
    assert (direct.source, direct.medium, direct.campaign) == ("(direct)", "(none)", "(none)")


def test_every_channel_but_unknown_has_a_rule_in_order() -> None:
    assert [r.channel for r in channels.RULES] == [c for c in Channel if c is not Channel.UNKNOWN]
    assert channels.RULES[-1].channel is Channel.DIRECT
