"""The core types: a stored event and the click ids it carries.

Identity attaches the click ids and pixel cookies of the person's devices; destinations read them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal


@dataclass(frozen=True)
class ClickId:
    """A click id seen on a visitor's landing URL, with the time it was first seen."""

    kind: str  # gclid, gbraid, wbraid, fbclid, ttclid, msclkid, li_fat_id, ScCid, epik, rdt_cid
    value: str  # byte-exact, as it arrived
    first_seen_at: datetime  # timezone-aware UTC


@dataclass(frozen=True)
class Event:
    """One stored event as adapters see it; personal data only as normalised SHA-256 hashes."""

    pk: str  # firstparty's row id
    event_id: str  # the caller's dedup key, forwarded to the platforms as theirs
    type: Literal["page", "track", "identify"]
    name: str  # "page" for page events, the track name otherwise
    source: str
    source_kind: Literal["browser", "server"]
    occurred_at: datetime  # timezone-aware UTC
    received_at: datetime
    url: str | None = None
    referrer: str | None = None
    title: str | None = None
    properties: Mapping[str, Any] = field(default_factory=dict)
    # Hashed identifiers, keys as in `identity.pii.hash_user`: em, em_google, ph, ph_e164, fn,
    # ln, ct, st, zp, country, db, ge, external_id (64 lowercase hex chars each); and in clear,
    # only `postal_code` and `country_code`, which Google's address match needs unhashed.
    user: Mapping[str, str] = field(default_factory=dict)
    # Plain context: ip, user_agent, fbp, fbc, ttp, ga, gcl_aw (pixel cookies as sent).
    context: Mapping[str, str] = field(default_factory=dict)
    # Consent Mode v2 names -> "granted" | "denied"; absent means not stated.
    consent: Mapping[str, str] = field(default_factory=dict)
    visitor_id: str | None = None
    user_id: str | None = None
    # Click ids available for attribution (from all the person's devices once identity links them).
    click_ids: Sequence[ClickId] = ()
    # Why the event looks automated (collect/bots.py: crawler, headless, ...); None: a person.
    bot: str | None = None

    def click_id(self, kind: str) -> ClickId | None:
        """The most recently first-seen click id of this kind, if any."""
        found = [c for c in self.click_ids if c.kind == kind]
        return max(found, key=lambda c: c.first_seen_at) if found else None

    @property
    def identifiers_allowed(self) -> bool:
        """False when the visitor denied ad_user_data: send no user identifiers then."""
        return self.consent.get("ad_user_data") != "denied"
