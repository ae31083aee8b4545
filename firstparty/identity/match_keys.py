"""Which identifiers an event carries that an ad platform can match a person with.

Our own estimate for the match quality report: an identifier counts when the event would carry
it to a platform that matches on it. Personal identifiers (hashes, pixel cookies, the
advertiser's external id) count only when the visitor did not deny ad_user_data, as adapters
then leave them out; the IP address, user agent and click ids count whatever the consent.
"""

from __future__ import annotations

from firstparty.event import Event

# Every key the report knows, in the order of its columns.
KEYS: tuple[str, ...] = (
    "email",
    "phone",
    "external_id",
    "fbc",
    "fbp",
    "ip",
    "user_agent",
    "gclid",
    "gbraid",
    "wbraid",
    "ttclid",
    "ttp",
)
# The hashed `Event.user` field(s) behind each personal key.
_USER_FIELDS = {"email": ("em", "em_google"), "phone": ("ph", "ph_e164")}
_CLICKS = ("gclid", "gbraid", "wbraid", "ttclid")


def carried(event: Event) -> frozenset[str]:
    """The keys of `KEYS` this event carries."""
    found = {
        key
        for key, context in (("ip", "ip"), ("user_agent", "user_agent"))
        if event.context.get(context)
    }
    found.update(kind for kind in _CLICKS if event.click_id(kind) is not None)
    if not event.identifiers_allowed:
        return frozenset(found)
    found.update(
        key for key, fields in _USER_FIELDS.items() if any(event.user.get(f) for f in fields)
    )
    if event.user.get("external_id"):
        found.add("external_id")
    if event.context.get("fbc") or event.click_id("fbclid") is not None:
        found.add("fbc")
    found.update(key for key in ("fbp", "ttp") if event.context.get(key))
    return frozenset(found)
