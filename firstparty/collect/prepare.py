"""Turn a validated event into the rows to store: times settled, PII hashed, touch extracted.

Time policy (documented in README, "Timestamps"):
- no timestamp: the server's receive time;
- never later than the receive time: a stated time ahead of it (within the skew) is the receive
  time, because the platforms refuse events from the future (destinations.md §6);
- browser sources: the client's clock is trusted within `max_clock_skew_seconds` of the
  server's; outside it the receive time is used (the client value stays in the request);
- server sources may send past timestamps (offline conversions) up to `max_past_days` old;
  older, or later than the allowed skew into the future, is a 422.

Field tolerance: an identifier, amount or click id that cannot be used is dropped with a
warning (`Prepared.warnings`, answered in the 202) and the event is kept without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from firstparty import ids
from firstparty.collect import amounts, bots, touch
from firstparty.collect.schema import EventIn
from firstparty.errors import FieldError, InputError
from firstparty.identity import pii
from firstparty.settings import CollectSettings


@dataclass(frozen=True)
class Source:
    name: str
    kind: str  # browser | server
    origins: tuple[str, ...] = ()
    bots: str = "flag"  # flag | drop: what to do with events from crawlers (collect/bots.py)


# Both built once per event on the hot path: msgspec structs build several times faster than
# frozen dataclasses, and hold no cycles for the garbage collector to walk (gc=False).
class Arrival(msgspec.Struct, frozen=True, gc=False):
    """What the request says about an event beside its body: who sent it, from where, when."""

    source: Source
    received_at: datetime
    visitor_id: str | None = None  # browser sources: the fp_id cookie's visitor
    new_visitor: bool = False  # visitor_id was minted for this request: not in the database yet
    client_ip: str | None = None
    user_agent: str | None = None
    referer: str | None = None


class Prepared(msgspec.Struct, frozen=True, gc=False):
    """Everything the writer needs to store one event (and nothing in clear that must not be)."""

    pk: str
    source: Source
    event_id: str
    type: str
    name: str
    occurred_at: datetime
    received_at: datetime
    visitor_id: str | None
    user_id: str | None  # as the request states it; the writer may find the person's own
    request: dict[str, Any]
    user: dict[str, str]
    context: dict[str, str]
    consent: dict[str, str]
    click_ids: dict[str, str]
    utm: dict[str, str]
    landing_url: str | None
    referrer: str | None
    phone_e164: str | None  # server sources naming a person by phone; never stored
    new_visitor: bool
    # When the click ids were first seen: browsers, on arrival; server sources (a CRM's click
    # ids, offline imports), at `context.click_ids.clicked_at`, else the event's own time.
    clicked_at: datetime | None = None
    warnings: tuple[FieldError, ...] = ()
    bot: str | None = None  # why it looks automated (collect/bots.py); None: a person


def prepare(
    event: EventIn,
    *,
    arrival: Arrival,
    limits: CollectSettings,
    default_region: str,
    annex: dict[str, Any] | None = None,
) -> Prepared:
    """Validate what msgspec cannot and build the stored form, once. Raises InputError (422).

    `annex`: kept in the stored request beside the event (Segment: the message as sent).
    """
    is_server = arrival.source.kind == "server"
    received_at = arrival.received_at
    occurred_at = settle_time(event.timestamp, received_at, is_server=is_server, limits=limits)
    warnings: list[FieldError] = []
    user = _hashed_user(event, default_region, warnings)
    phone_e164 = _phone(event, default_region) if is_server else None
    properties = amounts.clean(event.properties, warnings)
    context = _context(event, arrival, is_server=is_server)
    bot = bots.verdict(arrival.source.kind, context.get("user_agent"))
    referer = arrival.referer
    if not is_server and not event.url and referer:
        # The page that sent the event: its URL for platforms that require one (Meta).
        context["page_url"] = referer[:4096]
    landing = event.url or (None if is_server else referer)
    clicks, utm = touch.parse(landing)
    clicked_at = received_at
    given = event.context.click_ids if event.context else None
    if given and not is_server:
        warnings.append(FieldError("context.click_ids", "honoured from server sources only"))
    elif given:
        clicked_at = _stated_clicks(given, clicks, occurred_at, warnings)
    elif is_server:
        clicked_at = occurred_at
    request = _redacted_request(event, user, properties)
    if annex:
        request.update(annex)
    return Prepared(
        pk=ids.new_id(),
        source=arrival.source,
        event_id=event.event_id or ids.new_uuid(),
        type=event.type,
        name=event.name if event.type == "track" and event.name else event.type,
        occurred_at=occurred_at,
        received_at=received_at,
        visitor_id=(event.visitor_id if is_server else arrival.visitor_id),
        user_id=event.user_id if is_server else None,
        request=request,
        user=user,
        context=context,
        consent=msgspec.to_builtins(event.consent) if event.consent else {},
        click_ids=clicks,
        utm=utm,
        landing_url=landing,
        referrer=event.referrer,
        phone_e164=phone_e164,
        new_visitor=arrival.new_visitor,
        clicked_at=clicked_at,
        warnings=tuple(warnings),
        bot=bot.value if bot else None,  # plain text: drivers would store an enum's name
    )


def _hashed_user(event: EventIn, default_region: str, warnings: list[FieldError]) -> dict[str, str]:
    """The stored `user`; each value that cannot be normalised is dropped with a warning."""
    user, dropped = pii.clean_user(_user_dict(event), default_region)
    warnings += [FieldError(f"user.{field}", message) for field, message in dropped.items()]
    return user


def _phone(event: EventIn, default_region: str) -> str | None:
    """A server source's clear phone in E.164, to find the person by; never stored.

    None when there is none usable (an unusable one is already warned of by `_hashed_user`).
    """
    phone = event.user.phone if event.user else None
    if not phone or pii.HASHED.match(phone.strip().lower()):
        return None
    try:
        return pii.normalise_phone(phone, default_region)
    except pii.InvalidValue:
        return None


def _stated_clicks(
    given: dict[str, str],
    clicks: dict[str, str],
    occurred_at: datetime,
    warnings: list[FieldError],
) -> datetime:
    """Add a server source's `context.click_ids` to `clicks`; returns when they were first seen.

    That is `clicked_at` when given (it applies to the url's click ids too), else the event's
    own time. An unknown key or an unusable time is dropped with a warning.
    """
    clicked_at = occurred_at
    for key, value in given.items():
        where = f"context.click_ids.{key}"
        if key == "clicked_at":
            try:
                clicked_at = parse_timestamp(value).astimezone(UTC)
            except (ValueError, OverflowError, OSError):
                warnings.append(FieldError(where, "must be ISO 8601 or epoch seconds"))
        elif (kind := touch.kind_of(key)) is None:
            warnings.append(FieldError(where, "is not a known click id"))
        elif not value or len(value) > touch.MAX_VALUE:
            warnings.append(FieldError(where, f"must be 1 to {touch.MAX_VALUE} characters"))
        else:
            clicks[kind] = value
    return clicked_at


def parse_timestamp(value: str | int | float) -> datetime:
    """ISO 8601, or epoch seconds / milliseconds (numbers above 1e11 are milliseconds)."""
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.replace(".", "", 1).isdigit():
            return parse_timestamp(float(stripped))
        parsed = datetime.fromisoformat(stripped)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    seconds = value / 1000 if value > 1e11 else value
    return datetime.fromtimestamp(seconds, tz=UTC)


def settle_time(
    raw: str | int | float | None,
    received_at: datetime,
    *,
    is_server: bool,
    limits: CollectSettings,
) -> datetime:
    if raw is None:
        return received_at
    try:
        stated = parse_timestamp(raw).astimezone(UTC)
    except (ValueError, OverflowError, OSError):
        raise InputError(
            422,
            "validation failed",
            [FieldError("timestamp", "must be ISO 8601 or epoch seconds/milliseconds")],
        ) from None
    skew = timedelta(seconds=limits.max_clock_skew_seconds)
    if not is_server:
        return min(stated, received_at) if abs(stated - received_at) <= skew else received_at
    if stated > received_at + skew:
        raise InputError(422, "validation failed", [FieldError("timestamp", "is in the future")])
    if stated < received_at - timedelta(days=limits.max_past_days):
        message = f"is older than {limits.max_past_days} days"
        raise InputError(422, "validation failed", [FieldError("timestamp", message)])
    return min(stated, received_at)


def _user_dict(event: EventIn) -> dict[str, str]:
    if event.user is None:
        return {}
    return {k: v for k, v in msgspec.to_builtins(event.user).items() if isinstance(v, str)}


def _context(event: EventIn, arrival: Arrival, *, is_server: bool) -> dict[str, str]:
    given: dict[str, str] = msgspec.to_builtins(event.context) if event.context else {}
    given.pop("click_ids", None)  # kept as the event's click ids (click_ids table), not context
    if not is_server:
        given.pop("ip", None)
        given.pop("user_agent", None)
        if arrival.client_ip:
            given["ip"] = arrival.client_ip
        if arrival.user_agent:
            given["user_agent"] = arrival.user_agent[:4096]
    return given


def _redacted_request(
    event: EventIn, hashed_user: dict[str, str], properties: dict[str, Any]
) -> dict[str, Any]:
    """The request as received, with the clear personal data replaced by its hashes and the
    properties as corrected at the door (numbers as numbers)."""
    body: dict[str, Any] = msgspec.to_builtins(event)
    if "user" in body:
        body["user"] = {"hashed": hashed_user}
    if "properties" in body:
        body["properties"] = properties
    return body
