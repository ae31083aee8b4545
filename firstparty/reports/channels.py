"""The marketing channel of a touch, from its UTM tags, click ids and referrer: one rules table.

A touch is what a visitor row keeps as its first and last touch (`collect.touch.touch`): the
landing URL, the referrer, the UTM parameters and the click ids of the landing URL. `RULES` is
read top to bottom and the first rule that matches names the channel; docs/admin.md
("Acquisition") prints the same table. Comparisons are case-insensitive; a referrer on the
landing page's own host is no referrer (a page of the site itself).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from firstparty import platforms


class Channel(StrEnum):
    PAID_SOCIAL = "paid_social"
    PAID_SEARCH = "paid_search"
    DISPLAY = "display"
    EMAIL = "email"
    AFFILIATE = "affiliate"
    ORGANIC_SOCIAL = "organic_social"
    ORGANIC_SEARCH = "organic_search"
    REFERRAL = "referral"
    OTHER_CAMPAIGN = "other_campaign"
    DIRECT = "direct"
    UNKNOWN = "unknown"  # no device known for the conversion (a server event naming no one)


P = platforms.Platform
SOCIAL_CLICKS = frozenset(
    k.name
    for k in platforms.CLICK_KINDS
    if k.platform in (P.META, P.TIKTOK, P.LINKEDIN, P.SNAPCHAT, P.PINTEREST, P.REDDIT)
)
SEARCH_CLICKS = frozenset(
    k.name for k in platforms.CLICK_KINDS if k.platform in (P.GOOGLE_ADS, P.MICROSOFT_ADS)
)
PAID_MEDIUMS = frozenset({"cpc", "ppc", "paid", "cpm", "cpv", "cpa"})
PAID_SOCIAL_MEDIUMS = frozenset({"paid_social", "paidsocial", "paid-social", "social_paid"})
PAID_SEARCH_MEDIUMS = frozenset({"cpc", "ppc", "paid", "paid_search", "paidsearch", "sem"})
DISPLAY_MEDIUMS = frozenset({"display", "banner", "cpm", "cpv", "interstitial", "expandable"})
EMAIL_MEDIUMS = frozenset({"email", "e-mail", "e_mail", "newsletter"})
SOCIAL_MEDIUMS = frozenset({"social", "social-network", "social_network", "social-media", "sm"})
# utm_source values and referrer hosts (a label of the host, "l.facebook.com" -> "facebook").
SOCIAL_SITES = frozenset(
    {
        "facebook",
        "fb",
        "instagram",
        "ig",
        "meta",
        "messenger",
        "tiktok",
        "linkedin",
        "lnkd",
        "twitter",
        "x",
        "t",  # t.co
        "snapchat",
        "pinterest",
        "reddit",
        "youtube",
        "threads",
        "whatsapp",
    }
)
SEARCH_SITES = frozenset(
    {"google", "bing", "duckduckgo", "yahoo", "baidu", "yandex", "ecosia", "qwant", "naver"}
)
SEARCH_HOSTS = frozenset({"search.brave.com", "search.yahoo.com", "startpage.com"})


@dataclass(frozen=True)
class Facts:
    """What the rules look at, read once from a touch (everything lower case)."""

    utm_source: str
    utm_medium: str
    utm_campaign: str
    clicks: frozenset[str]  # click id kinds, as stored (ScCid keeps its case)
    referrer_host: str  # "" when none, or the landing page's own host

    @property
    def referrer_labels(self) -> set[str]:
        return set(self.referrer_host.split(".")) if self.referrer_host else set()


@dataclass(frozen=True)
class Rule:
    channel: Channel
    says: str  # the rule in words, as docs/admin.md shows it
    test: Callable[[Facts], bool]


def _social_source(f: Facts) -> bool:
    return f.utm_source in SOCIAL_SITES or bool(f.referrer_labels & SOCIAL_SITES)


def _search_referrer(f: Facts) -> bool:
    host = f.referrer_host
    return host in SEARCH_HOSTS or bool(f.referrer_labels & SEARCH_SITES)


RULES: tuple[Rule, ...] = (
    Rule(
        Channel.PAID_SOCIAL,
        "a social ad click id (fbclid, ttclid, li_fat_id, ScCid, epik, rdt_cid); or utm_medium "
        "paid_social; or a paid utm_medium (cpc, ppc, paid, cpm, cpv, cpa) from a social "
        "utm_source or referrer (facebook, instagram, tiktok, linkedin, x, ...)",
        lambda f: (
            bool(f.clicks & SOCIAL_CLICKS)
            or f.utm_medium in PAID_SOCIAL_MEDIUMS
            or (f.utm_medium in PAID_MEDIUMS and _social_source(f))
        ),
    ),
    Rule(
        Channel.PAID_SEARCH,
        "a search ad click id (gclid, gbraid, wbraid, msclkid); or utm_medium cpc, ppc, paid, "
        "paid_search or sem",
        lambda f: bool(f.clicks & SEARCH_CLICKS) or f.utm_medium in PAID_SEARCH_MEDIUMS,
    ),
    Rule(
        Channel.DISPLAY,
        "utm_medium display, banner, cpm, cpv, interstitial or expandable",
        lambda f: f.utm_medium in DISPLAY_MEDIUMS,
    ),
    Rule(
        Channel.EMAIL,
        "utm_medium email, e-mail or newsletter; or utm_source newsletter",
        lambda f: f.utm_medium in EMAIL_MEDIUMS or f.utm_source == "newsletter",
    ),
    Rule(
        Channel.AFFILIATE,
        "utm_medium affiliate or cpa",
        lambda f: f.utm_medium in ("affiliate", "cpa"),
    ),
    Rule(
        Channel.ORGANIC_SOCIAL,
        "utm_medium social (social-network, social-media, sm); or a social utm_source or "
        "referrer with no paid medium",
        lambda f: f.utm_medium in SOCIAL_MEDIUMS or _social_source(f),
    ),
    Rule(
        Channel.ORGANIC_SEARCH,
        "utm_medium organic; or a search engine's referrer (google, bing, duckduckgo, yahoo, "
        "baidu, yandex, ecosia, qwant, naver, search.brave.com)",
        lambda f: f.utm_medium == "organic" or _search_referrer(f),
    ),
    Rule(
        Channel.REFERRAL,
        "utm_medium referral; or a referrer on another site",
        lambda f: f.utm_medium == "referral" or bool(f.referrer_host),
    ),
    Rule(
        Channel.OTHER_CAMPAIGN,
        "any other UTM tags (a utm_source, utm_medium or utm_campaign no rule above knows)",
        lambda f: bool(f.utm_source or f.utm_medium or f.utm_campaign),
    ),
    Rule(Channel.DIRECT, "nothing of the above: no tags, no click id, no referrer", lambda f: True),
)


@dataclass(frozen=True)
class Attribution:
    """A touch's channel and its source / medium / campaign, as the reports show them."""

    channel: Channel
    source: str
    medium: str
    campaign: str


NO_DEVICE = Attribution(Channel.UNKNOWN, "(unknown)", "(unknown)", "(none)")
CLICK_SOURCE = {
    P.GOOGLE_ADS: "google",
    P.MICROSOFT_ADS: "bing",
    P.META: "facebook",
    P.TIKTOK: "tiktok",
    P.LINKEDIN: "linkedin",
    P.SNAPCHAT: "snapchat",
    P.PINTEREST: "pinterest",
    P.REDDIT: "reddit",
}
DEFAULT_MEDIUM = {
    Channel.PAID_SOCIAL: "paid",
    Channel.PAID_SEARCH: "cpc",
    Channel.ORGANIC_SEARCH: "organic",
    Channel.ORGANIC_SOCIAL: "social",
    Channel.REFERRAL: "referral",
    Channel.DIRECT: "(none)",
}


def facts(touch: Mapping[str, Any] | None) -> Facts:
    """The rules' view of a stored touch (missing parts are empty)."""
    found: Mapping[str, Any] = touch if isinstance(touch, Mapping) else {}
    utm = _part(found, "utm")
    clicks = _part(found, "click_ids")
    return Facts(
        _lower(utm.get("utm_source")),
        _lower(utm.get("utm_medium")),
        _lower(utm.get("utm_campaign")),
        frozenset(str(k) for k in clicks),
        _referrer_host(found.get("referrer"), found.get("landing_url")),
    )


def channel_of(touch: Mapping[str, Any] | None) -> Channel:
    """The channel of a stored touch: the first rule of `RULES` that matches."""
    found = facts(touch)
    return next(rule.channel for rule in RULES if rule.test(found))


def attribute(touch: Mapping[str, Any] | None) -> Attribution:
    """Channel, source, medium and campaign of a touch; UTM tags win, else what the click or
    referrer says (google / cpc for a gclid, the referrer's host / referral...)."""
    found = facts(touch)
    channel = next(rule.channel for rule in RULES if rule.test(found))
    source = found.utm_source or _click_source(found) or found.referrer_host or "(direct)"
    medium = found.utm_medium or DEFAULT_MEDIUM.get(channel, "(none)")
    return Attribution(channel, source[:255], medium[:255], (found.utm_campaign or "(none)")[:255])


def _part(touch: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = touch.get(name)
    return value if isinstance(value, Mapping) else {}


def _click_source(f: Facts) -> str:
    for kind in platforms.CLICK_KINDS:
        if kind.name in f.clicks:
            return CLICK_SOURCE.get(kind.platform, kind.platform.value)
    return ""


def _lower(value: object) -> str:
    return str(value).strip().lower() if isinstance(value, str | int | float) else ""


def _referrer_host(referrer: object, landing: object) -> str:
    host = _host(referrer)
    if not host or host == _host(landing):
        return ""
    return host.removeprefix("www.")


def _host(url: object) -> str:
    if not isinstance(url, str) or not url:
        return ""
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""
