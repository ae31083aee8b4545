"""Google Analytics 4 Measurement Protocol (destinations.md §4).

`POST {api_base}/mp/collect?measurement_id=…&api_secret=…` with at most 25 events. `client_id`,
`user_id` and `consent` belong to the whole request, so a batch is split into one request per
(client_id, user_id, consent), each of at most 25 events.

* `client_id`: from the `_ga` cookie when the tracker sent it (`GA1.1.<rand>.<ts>` →
  `<rand>.<ts>`); otherwise derived from our visitor id (or, failing that, the user id) as
  `<n>.<m>`, two numbers taken from SHA-256("firstparty:" + id) — stable, shaped like Google's,
  and not reversible to the cookie value.
* `user_id`: our opaque user id, never a value that looks like an email, a phone or a hash.
* `user_data`: the hashed email (Google's gmail rule) and E.164 phone, unless `ad_user_data`
  is denied (developers.google.com/analytics/devguides/collection/ga4/uid-data).
* `session_id` and `engagement_time_msec` on every event, without which GA4 shows the event as
  "Unassigned" and does not apply `user_id` (§6): the session of this stream's `_ga_<container>`
  cookie as fp.js read it (`context.ga_session`), else the server-side session of the visitor
  (`context.session_id`).
* `purchase` and `refund` carry `transaction_id` (the order's, else our event id): GA4 counts
  a transaction once.
* `timestamp_micros` per event; GA4 accepts up to 72 hours back, older events are skipped.
* A request body stays under 130 kB (GA4 answers 2xx to a larger one and drops it): a batch is
  split by size too, and an event too large alone is skipped with the reason.
* `validate = true` posts to `/debug/mp/collect` instead; nothing is recorded in GA4, the
  `validationMessages` become the events' outcomes and a valid event is recorded `test`.

Events whose `analytics_storage` consent is denied are skipped (`respect_analytics_storage`).
"""

from __future__ import annotations

import hashlib
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar, Literal

import msgspec
from pydantic import Field, SecretStr, field_validator

from firstparty import platforms
from firstparty.destinations import base
from firstparty.event import Event

MAX_EVENTS = 25
MAX_PARAMS = 25
MAX_BODY_BYTES = 130_000  # "POST body must be smaller than 130kB" (§4.3)
TRANSACTIONS = frozenset({"purchase", "refund"})
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,39}$")
RESERVED_EVENTS = frozenset(
    {
        "ad_activeview",
        "ad_click",
        "ad_exposure",
        "ad_impression",
        "ad_query",
        "adunit_exposure",
        "app_clear_data",
        "app_install",
        "app_update",
        "app_remove",
        "error",
        "first_open",
        "first_visit",
        "in_app_purchase",
        "notification_dismiss",
        "notification_foreground",
        "notification_open",
        "notification_receive",
        "os_update",
        "screen_view",
        "session_start",
        "user_engagement",
    }
)
RESERVED_PREFIXES = ("google_", "ga_", "firebase_")
# Value length limits (§4.3): 100 by default, more for the page parameters.
VALUE_LIMITS = {"page_location": 1000, "page_referrer": 420, "page_title": 300}
# "GA1.1.<rand>.<ts>" as the cookie holds it, or "<rand>.<ts>" already stripped.
_GA_COOKIE = re.compile(r"^(?:GA\d+\.\d+\.)?(\d+)\.(\d+)$")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")
_PHONE = re.compile(r"^\+?[\d\s().\-]{7,}$")
_HASH = re.compile(r"^[A-Fa-f0-9]{64}$")
_INDEX = re.compile(r"index: \[(\d+)\]|events\[(\d+)\]")


class GA4Settings(base.DestinationSettings):
    """Settings of a `ga4_mp` destination."""

    type: Literal["ga4_mp"] = "ga4_mp"
    measurement_id: str = Field(pattern=r"^G-[A-Z0-9]+$")
    api_secret: SecretStr
    # `validate` in config: use /debug/mp/collect, nothing recorded, its messages kept.
    validate_only: bool = Field(default=False, alias="validate")
    validation_behavior: Literal["RELAXED", "ENFORCE_RECOMMENDATIONS"] | None = None
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")  # when `value` has none
    # Needed for Realtime and session reports (§4.2): on every event.
    engagement_time_msec: int = Field(default=1, ge=1)
    send_user_id: bool = True
    send_user_data: bool = True
    respect_analytics_storage: bool = True

    @field_validator("events")
    @classmethod
    def _ga4_names(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return None  # the default mapping (platforms.DEFAULT_EVENTS)
        if not value:
            raise ValueError("an empty events mapping sends nothing; leave it out for the default")
        for incoming, name in value.items():
            problem = name_problem(name)
            if problem:
                raise ValueError(f"{incoming}: {problem}")
        return value

    @property
    def base_url(self) -> str:
        return (self.api_base or "https://www.google-analytics.com").rstrip("/")

    @property
    def container(self) -> str:
        """The `_ga_<container>` cookie's suffix for this stream: the id without "G-"."""
        return self.measurement_id.removeprefix("G-")


def name_problem(name: str) -> str | None:
    """Why GA4 would refuse this event name, or None (§4.3, §4.4)."""
    if not NAME.match(name):
        return f"{name!r} is not a GA4 event name (letters, digits, _; a letter first; ≤ 40)"
    if name in RESERVED_EVENTS or name.startswith(RESERVED_PREFIXES):
        return f"{name!r} is reserved by GA4"
    return None


def client_id(event: Event) -> str | None:
    """The GA client id: from the `_ga` cookie, else derived from the visitor (or user) id."""
    found = _GA_COOKIE.match(event.context.get("ga", "").strip())
    if found:
        return f"{found.group(1)}.{found.group(2)}"
    base = event.visitor_id or event.user_id
    if not base:
        return None
    digest = hashlib.sha256(f"firstparty:{base}".encode()).digest()
    # Shaped like gtag's "<31-bit random>.<seconds>"; both parts come from the digest.
    return f"{int.from_bytes(digest[:4]) & 0x7FFFFFFF}.{int.from_bytes(digest[4:8]) % 10**10}"


def safe_user_id(user_id: str | None) -> str | None:
    """The user id if it cannot be personal data (no email, phone or hash of one), else None."""
    if not user_id or len(user_id) > 256:
        return None
    if _EMAIL.search(user_id) or _PHONE.match(user_id) or _HASH.match(user_id):
        return None
    return user_id


def session(event: Event, container: str) -> tuple[str, int | None] | None:
    """(session_id, session_number): this stream's gtag session, else the server-side one."""
    found = platforms.ga_sessions(event.context.get(platforms.GA_SESSION_FIELD, ""))
    if container in found:
        return found[container].session_id, found[container].session_number
    session_id = event.context.get("session_id", "")
    if not session_id.isdigit():
        return None
    number = event.context.get("session_number", "")
    return session_id, int(number) if number.isdigit() else None


def user_data(event: Event) -> dict[str, list[str]]:
    """Hashed email and phone as the Measurement Protocol takes them (uid-data guide)."""
    if event.consent.get("ad_user_data") == "denied":
        return {}
    email = event.user.get("em_google") or event.user.get("em")
    phone = event.user.get("ph_e164")
    found = {"sha256_email_address": email, "sha256_phone_number": phone}
    return {key: [value] for key, value in found.items() if value and _HASH.match(value)}


class GA4MeasurementProtocol(base.Adapter):
    """GA4 Measurement Protocol for web streams."""

    type = "ga4_mp"
    settings_model = GA4Settings
    max_batch = MAX_EVENTS
    max_event_age = timedelta(hours=72)
    example_settings: ClassVar[Mapping[str, Any]] = {
        "name": "ga4",
        "type": "ga4_mp",
        "measurement_id": "G-ABC123XYZ",
        "api_secret": "env:GA4_API_SECRET",
        "events": {"page": "page_view", "Lead": "generate_lead", "Purchase": "purchase"},
    }

    settings: GA4Settings

    @property
    def test_mode(self) -> str | None:
        return "validate (GA4 debug endpoint)" if self.settings.validate_only else None

    def skip(self, event: Event, now: datetime) -> str | None:
        """Older than 72 hours, analytics consent denied, no id to send it under, too large."""
        age = now - event.occurred_at
        if age > self.max_event_age:
            hours = age.total_seconds() / 3600
            return f"event is {hours:.1f} hours old; GA4 accepts events up to 72 hours old"
        denied = event.consent.get("analytics_storage") == "denied"
        if denied and self.settings.respect_analytics_storage:
            return "analytics_storage consent denied"
        if client_id(event) is None:
            return "no _ga cookie, visitor id or user id to derive a GA4 client_id from"
        size = self._size(self._request_key(event), [event])
        if size > MAX_BODY_BYTES:
            return f"the event alone makes a {size}-byte body; GA4 drops bodies over 130 kB"
        return None

    def build(
        self, events: Sequence[Event], token: str | None = None
    ) -> list[base.OutgoingRequest]:
        """One request per client_id (with its user id, data and consent), ≤ 25 events and
        < 130 kB each."""
        groups: dict[tuple[Any, ...], list[Event]] = {}
        for event in events:
            groups.setdefault(self._request_key(event), []).append(event)
        requests = []
        for key, members in groups.items():
            chunk: list[Event] = []
            for event in members:
                full = len(chunk) == MAX_EVENTS
                if chunk and (full or self._size(key, [*chunk, event]) > MAX_BODY_BYTES):
                    requests.append(self._request(key, chunk))
                    chunk = []
                chunk.append(event)
            if chunk:
                requests.append(self._request(key, chunk))
        return requests

    def interpret(
        self, request: base.OutgoingRequest, response: base.Response
    ) -> dict[str, base.Outcome]:
        """2xx is accepted (GA4 reports nothing more); in validate mode, the messages decide."""
        pks = request.event_pks
        status = response.status
        if status in (408, 429) or status >= 500:
            reason = f"GA4 answered HTTP {status}"
            return dict.fromkeys(pks, base.Retry(reason, after=base.retry_after(response.headers)))
        if not 200 <= status < 300:
            text = response.body[:300].decode("utf-8", "replace")
            return dict.fromkeys(
                pks, base.Rejected(f"GA4 answered HTTP {status}: {text}".rstrip(": "))
            )
        if not self.settings.validate_only:
            return dict.fromkeys(pks, base.Delivered())
        return validation_outcomes(pks, response)

    def _request_key(self, event: Event) -> tuple[Any, ...]:
        user = safe_user_id(event.user_id) if self.settings.send_user_id else None
        consent = tuple(
            (name, event.consent[name].upper())
            for name in ("ad_user_data", "ad_personalization")
            if event.consent.get(name) in ("granted", "denied")
        )
        data = user_data(event) if self.settings.send_user_data else {}
        return client_id(event), user, tuple((k, tuple(v)) for k, v in data.items()), consent

    def _body(self, key: tuple[Any, ...], events: Sequence[Event]) -> dict[str, Any]:
        cid, user, data, consent = key
        body: dict[str, Any] = {"client_id": cid}
        if user:
            body["user_id"] = user
        if data:
            body["user_data"] = {k: list(v) for k, v in data}
        if consent:
            body["consent"] = dict(consent)
        if self.settings.validation_behavior:
            body["validation_behavior"] = self.settings.validation_behavior
        body["events"] = [self._event(e) for e in events]
        return body

    def _size(self, key: tuple[Any, ...], events: Sequence[Event]) -> int:
        """The body's size as the worker encodes it."""
        return len(msgspec.json.encode(self._body(key, events)))

    def _request(self, key: tuple[Any, ...], events: Sequence[Event]) -> base.OutgoingRequest:
        settings = self.settings
        body = self._body(key, events)
        secret = settings.api_secret.get_secret_value()
        query = urllib.parse.urlencode(
            {"measurement_id": settings.measurement_id, "api_secret": secret}
        )
        path = "/debug/mp/collect" if settings.validate_only else "/mp/collect"
        return base.OutgoingRequest(
            method="POST",
            url=f"{settings.base_url}{path}?{query}",
            event_pks=tuple(e.pk for e in events),
            headers={"Content-Type": "application/json"},
            json=body,
            secrets=(secret,),
        )

    def _event(self, event: Event) -> dict[str, Any]:
        name = self.settings.mapped_name(event.name) or event.name
        micros = int(event.occurred_at.timestamp()) * 1_000_000 + event.occurred_at.microsecond
        return {"name": name, "timestamp_micros": micros, "params": self._params(event)}

    def _params(self, event: Event) -> dict[str, Any]:
        props = event.properties
        params: dict[str, Any] = {}
        value = props.get("value")
        if isinstance(value, int | float) and not isinstance(value, bool):
            params["value"] = value
            currency = props.get("currency")
            currency = currency.upper() if isinstance(currency, str) else self.settings.currency
            if currency:
                params["currency"] = currency
        page = [
            ("page_location", event.url),
            ("page_referrer", event.referrer),
            ("page_title", event.title),
        ]
        params.update({k: v for k, v in page if v})
        found = session(event, self.settings.container)
        if found:
            params["session_id"] = found[0]
        params["engagement_time_msec"] = self.settings.engagement_time_msec
        if self.settings.mapped_name(event.name) in TRANSACTIONS:
            order = props.get("transaction_id") or props.get("order_id") or event.event_id
            params["transaction_id"] = str(order)
        for key, raw in props.items():
            if key in params or key in ("value", "currency") or len(params) >= MAX_PARAMS:
                continue
            if key == "items" and isinstance(raw, list):
                params["items"] = [i for i in raw if isinstance(i, dict)][:200]
            elif _param_ok(key, raw):
                params[key] = raw
        return {k: _clip(k, v) for k, v in params.items()}


def _param_ok(key: str, value: Any) -> bool:
    # Custom parameters: valid names, scalar values, nothing that looks like an email (PII).
    if not NAME.match(key) or key.startswith(RESERVED_PREFIXES):
        return False
    if isinstance(value, str):
        return not _EMAIL.search(value)
    return isinstance(value, int | float | bool)


def _clip(key: str, value: Any) -> Any:
    return value[: VALUE_LIMITS.get(key, 100)] if isinstance(value, str) else value


def validation_outcomes(pks: Sequence[str], response: base.Response) -> dict[str, base.Outcome]:
    """Outcomes from the debug endpoint: messages naming an event index reject that event."""
    try:
        data = response.json()
    except ValueError:
        data = None
    messages = data.get("validationMessages") if isinstance(data, dict) else None
    if not isinstance(messages, list):
        return dict.fromkeys(pks, base.Rejected("debug endpoint gave no validationMessages"))
    per_event: dict[int, list[str]] = {}
    general: list[str] = []
    for message in messages:
        if not isinstance(message, Mapping):
            continue
        text = (
            f"{message.get('validationCode', '')} at {message.get('fieldPath', '')}: "
            f"{message.get('description', '')}"
        )
        found = _INDEX.search(f"{message.get('fieldPath', '')} {message.get('description', '')}")
        index = int(found.group(1) or found.group(2)) if found else None
        if index is not None and index < len(pks):
            per_event.setdefault(index, []).append(text)
        else:
            general.append(text)
    outcomes: dict[str, base.Outcome] = {}
    for i, pk in enumerate(pks):
        found_messages = per_event.get(i, []) + general
        outcomes[pk] = (
            base.Rejected("; ".join(found_messages))
            if found_messages
            else base.Delivered("valid per /debug/mp/collect (validate mode: not recorded)", True)
        )
    return outcomes
