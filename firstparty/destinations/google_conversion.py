"""The canonical Google Ads conversion: one event as Google takes it, and its two serialisations.

`conversion()` decides what is sent (the click credited, the identifiers, consent, value);
`ingest_event()` writes it for the Data Manager API (§3b.3), `click_conversion()` for the legacy
`uploadClickConversions` (§3.2). The adapter (`google_ads`) builds the requests around them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from firstparty import platforms
from firstparty.event import ClickId, Event

if TYPE_CHECKING:
    from firstparty.destinations.google_ads import GoogleAdsSettings

# Google's click ids; on a tie of first-seen times the earlier one here is sent (wbraid is web).
CLICK_KINDS = ("gclid", "wbraid", "gbraid")
CLICK_WINDOW = max(platforms.window_of(kind) for kind in CLICK_KINDS)


@dataclass(frozen=True)
class Conversion:
    """One event as Google Ads takes it, before serialising for either API."""

    action_id: str
    transaction_id: str
    occurred_at: datetime
    source: str
    click: ClickId | None
    email: str | None
    phone: str | None
    value: float | None
    currency: str | None
    consent: Mapping[str, bool]  # adUserData / adPersonalization -> granted
    ip: str | None
    user_agent: str | None
    address: Mapping[str, str] | None = None  # Data Manager's AddressInfo


def usable_click(event: Event, now: datetime, window: timedelta = CLICK_WINDOW) -> ClickId | None:
    """The click to credit, uploading at `now`: the most recent first seen at or before the
    conversion and at most `window` before `now`; on a tie gclid, then wbraid, then gbraid."""
    clicks = [
        c
        for c in (*event.click_ids, *_gcl_aw(event.context.get("gcl_aw")))
        if c.kind in CLICK_KINDS
        and c.value
        and c.first_seen_at <= event.occurred_at
        and now - c.first_seen_at <= window
    ]
    if not clicks:
        return None
    return max(clicks, key=lambda c: (c.first_seen_at, -CLICK_KINDS.index(c.kind)))


def _gcl_aw(cookie: str | None) -> list[ClickId]:
    # The Google tag's cookie: GCL.<unix seconds>.<gclid>
    parts = (cookie or "").split(".", 2)
    if len(parts) != 3 or parts[0] != "GCL" or not parts[1].isdigit() or not parts[2]:
        return []
    return [ClickId("gclid", parts[2], datetime.fromtimestamp(int(parts[1]), UTC))]


def identifiers(event: Event) -> tuple[str | None, str | None]:
    """Hashed email (gmail rule) and E.164 phone, unless the visitor denied ad_user_data."""
    if not event.identifiers_allowed:
        return None, None
    return event.user.get("em_google") or event.user.get("em"), event.user.get("ph_e164")


def address(event: Event) -> dict[str, str] | None:
    """Google's address identifier: hashed first and last name, postal and region code in clear.

    All four are required inside an address (§3b.3); without consent for ad_user_data, none.
    """
    user = event.user
    given, family = user.get("fn"), user.get("ln")
    postal = (user.get("postal_code") or "").strip()
    region = (user.get("country_code") or "").strip().upper()
    if not (event.identifiers_allowed and given and family and postal):
        return None
    if not re.fullmatch(r"[A-Z]{2}", region):
        return None
    return {"givenName": given, "familyName": family, "regionCode": region, "postalCode": postal}


def conversion(settings: GoogleAdsSettings, event: Event, now: datetime) -> Conversion:
    """The canonical conversion for an event this destination wants, uploaded at `now`."""
    email, phone = identifiers(event)
    value = event.properties.get("value")
    currency = event.properties.get("currency")
    consent = {
        key: event.consent[name] == "granted"
        for key, name in (
            ("adUserData", "ad_user_data"),
            ("adPersonalization", "ad_personalization"),
        )
        if event.consent.get(name) in ("granted", "denied")
    }
    return Conversion(
        action_id=settings.mapped_name(event.name) or "",
        transaction_id=event.event_id,
        occurred_at=event.occurred_at,
        source="WEB" if event.source_kind == "browser" else settings.server_event_source,
        click=usable_click(event, now, timedelta(days=settings.click_window_days)),
        email=email,
        phone=phone,
        value=float(value)
        if isinstance(value, int | float) and not isinstance(value, bool)
        else None,
        currency=currency.upper() if isinstance(currency, str) and currency else settings.currency,
        consent=consent,
        ip=event.context.get("ip") if settings.send_ip_address else None,
        user_agent=event.context.get("user_agent") if settings.send_user_agent else None,
        address=address(event) if settings.api == "data_manager" else None,
    )


def utc_now() -> datetime:
    return datetime.now(UTC)


def ingest_event(c: Conversion) -> dict[str, Any]:
    event: dict[str, Any] = {
        "destinationReferences": [c.action_id],
        "transactionId": c.transaction_id,
        "eventTimestamp": c.occurred_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eventSource": c.source,
    }
    if c.value is not None:
        event["conversionValue"] = c.value
    if c.currency:
        event["currency"] = c.currency
    if c.click:
        event["adIdentifiers"] = {c.click.kind: c.click.value}
    ids: list[dict[str, Any]] = [{"emailAddress": c.email}] if c.email else []
    ids += [{"phoneNumber": c.phone}] if c.phone else []
    ids += [{"address": dict(c.address)}] if c.address else []
    if ids:
        event["userData"] = {"userIdentifiers": ids}
    if c.consent:
        event["consent"] = {
            k: "CONSENT_" + ("GRANTED" if v else "DENIED") for k, v in c.consent.items()
        }
    device = {k: v for k, v in (("userAgent", c.user_agent), ("ipAddress", c.ip)) if v}
    if device:
        event["eventDeviceInfo"] = device
    return event


def click_conversion(cid: str, c: Conversion) -> dict[str, Any]:
    row: dict[str, Any] = {
        "conversionAction": f"customers/{cid}/conversionActions/{c.action_id}",
        "conversionDateTime": c.occurred_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S+00:00"),
    }
    if c.click:
        row[c.click.kind] = c.click.value
    if c.value is not None:
        row["conversionValue"] = c.value
    if c.currency:
        row["currencyCode"] = c.currency
    row["orderId"] = c.transaction_id
    ids = [{"hashedEmail": c.email}] if c.email else []
    ids += [{"hashedPhoneNumber": c.phone}] if c.phone else []
    if ids:
        row["userIdentifiers"] = ids
    if "adUserData" in c.consent:
        # adPersonalization is for other services only (§3.4).
        row["consent"] = {"adUserData": "GRANTED" if c.consent["adUserData"] else "DENIED"}
    if c.ip:
        row["userIpAddress"] = c.ip
    return row
