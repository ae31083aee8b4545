"""A fake of the GA4 Measurement Protocol (destinations.md §4).

    POST /mp/collect?measurement_id=…&api_secret=…        always 204, as Google does
    POST /debug/mp/collect?measurement_id=…&api_secret=…  200 {"validationMessages": [...]}

Both endpoints run the same checks (§4.2 to §4.4). The production one answers 204 regardless, as
Google does, but keeps the events that passed them (with the right measurement id and secret)
in `fake.accepted` and the messages in `fake.messages`, so tests can assert what GA4 would
have counted. Failures: `fake.script(Reply(503))`, `fake.script(Reply(429, headers=...))`.

What GA4 does that a lenient fake would miss:
* a body of 130 kB or more is answered 204 and dropped whole (§6): counted in `fake.dropped`;
  the debug endpoint names it (its wording there is the fake's own: unconfirmed);
* more than 25 events, or any other validation message: the whole request counts for nothing;
* `user_data` takes only SHA-256 hex lists under `sha256_email_address`,
  `sha256_phone_number` and `address` (…/ga4/uid-data);
* an event without `session_id` and `engagement_time_msec`, or whose session started more than
  24 hours before it, is counted but *Unassigned*, without its `user_id` (§4.3, §6):
  `fake.unassigned` lists those.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from tests.fakes.server import FakeServer, Received, Reply

NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,39}$")
RESERVED_EVENTS = {
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
RESERVED_PREFIXES = ("google_", "ga_", "firebase_")
VALUE_LIMITS = {"page_location": 1000, "page_referrer": 420, "page_title": 300}
TOP_KEYS = {
    "client_id",
    "user_id",
    "timestamp_micros",
    "user_properties",
    "consent",
    "non_personalized_ads",
    "events",
    "validation_behavior",
    "user_location",
    "device",
    "ip_override",
    "user_data",
}
MAX_AGE_MICROS = 72 * 3600 * 1_000_000
MAX_BODY_BYTES = 130_000
SESSION_WINDOW_SECONDS = 24 * 3600
USER_DATA_KEYS = {"sha256_email_address", "sha256_phone_number", "address"}
ADDRESS_KEYS = {
    "sha256_first_name",
    "sha256_last_name",
    "sha256_street",
    "city",
    "region",
    "postal_code",
    "country",
}
HEX64 = re.compile(r"^[a-f0-9]{64}$")


class FakeGA4(FakeServer):
    """The Measurement Protocol collection and validation endpoints."""

    def __init__(self, measurement_id: str = "G-ABC123XYZ", api_secret: str = "s3cr3t") -> None:
        super().__init__()
        self.measurement_id = measurement_id
        self.api_secret = api_secret
        # {"client_id", "user_id", "user_data", "event", "assigned"} per counted event
        self.accepted: list[dict[str, Any]] = []
        self.messages: list[dict[str, str]] = []
        self.dropped = 0  # requests answered 204 and thrown away for their size

    @property
    def unassigned(self) -> list[dict[str, Any]]:
        """Counted events GA4 cannot put in a session (reports show them as Unassigned)."""
        return [a for a in self.accepted if not a["assigned"]]

    def handle(self, request: Received) -> Reply:
        if request.method != "POST" or request.path not in ("/mp/collect", "/debug/mp/collect"):
            return Reply(404, b"Not Found")
        debug = request.path == "/debug/mp/collect"
        if len(request.body) >= MAX_BODY_BYTES:
            if debug:
                size = f"The request body is {len(request.body)} bytes; the limit is 130 kB."
                return Reply(200, {"validationMessages": [_msg("", size, "VALUE_OUT_OF_BOUNDS")]})
            self.dropped += 1
            return Reply(204)
        try:
            body = json.loads(request.body)
        except ValueError:
            body = None
        messages = (
            validate(body)
            if isinstance(body, dict)
            else [_msg("", "Invalid JSON.", "VALUE_INVALID")]
        )
        if debug:
            return Reply(200, {"validationMessages": messages})
        self.messages += messages
        ids_ok = request.query.get("measurement_id") == [self.measurement_id]
        if not messages and ids_ok and request.query.get("api_secret") == [self.api_secret]:
            assert isinstance(body, dict)
            for event in body["events"]:
                assigned = in_session(event)
                self.accepted.append(
                    {
                        "client_id": body["client_id"],
                        "user_id": body.get("user_id") if assigned else None,
                        "user_data": body.get("user_data"),
                        "event": event,
                        "assigned": assigned,
                    }
                )
        return Reply(204)


def in_session(event: dict[str, Any]) -> bool:
    """Whether GA4 can attribute the event to a session: session_id and engagement time given,
    and the hit no later than the session's start + 24 hours."""
    params = event.get("params") or {}
    session_id = str(params.get("session_id", ""))
    if not session_id.isdigit() or not params.get("engagement_time_msec"):
        return False
    micros = event.get("timestamp_micros")
    at = int(micros) / 1_000_000 if micros is not None else time.time()
    return 0 <= at - int(session_id) <= SESSION_WINDOW_SECONDS


def validate(body: dict[str, Any]) -> list[dict[str, str]]:
    """validationMessages for a request body, worded like Google's debug endpoint."""
    out: list[dict[str, str]] = []
    for key in sorted(set(body) - TOP_KEYS):
        out.append(_msg(key, f"Unknown field [{key}].", "VALUE_INVALID"))
    if not isinstance(body.get("client_id"), str) or not body.get("client_id"):
        out.append(_msg("client_id", "Measurement requires a client_id.", "VALUE_REQUIRED"))
    user_id = body.get("user_id")
    if user_id is not None and (not isinstance(user_id, str) or len(user_id) > 256):
        out.append(_msg("user_id", "user_id is too long or not a string.", "VALUE_OUT_OF_BOUNDS"))
    if isinstance(user_id, str) and "@" in user_id:
        out.append(
            _msg("user_id", "user_id must not carry PII (an email address).", "VALUE_INVALID")
        )
    out += _user_data_messages(body.get("user_data"))
    for key, value in (body.get("consent") or {}).items():
        if key not in ("ad_user_data", "ad_personalization") or value not in ("GRANTED", "DENIED"):
            out.append(_msg(f"consent.{key}", f"Invalid consent [{key}={value}].", "VALUE_INVALID"))
    events = body.get("events")
    if not isinstance(events, list) or not events:
        out.append(_msg("events", "Measurement requires at least one event.", "VALUE_REQUIRED"))
        return out
    if len(events) > 25:
        out.append(_msg("events", "Measurement has more than 25 events.", "EXCEEDED_MAX_ENTITIES"))
    enforce = body.get("validation_behavior") == "ENFORCE_RECOMMENDATIONS"
    for index, event in enumerate(events):
        out += _event_messages(index, event, enforce)
    return out


def _event_messages(index: int, event: dict[str, Any], enforce: bool) -> list[dict[str, str]]:
    out = []
    name = str(event.get("name", ""))
    if not NAME.match(name):
        description = (
            f"Event at index: [{index}] has invalid name [{name}]. "
            "Names must start with an alphabetic character."
        )
        out.append(_msg("events", description, "NAME_INVALID"))
    elif name in RESERVED_EVENTS or name.startswith(RESERVED_PREFIXES):
        description = f"Event at index: [{index}] has name [{name}] which is reserved."
        out.append(_msg("events", description, "NAME_RESERVED"))
    micros = event.get("timestamp_micros")
    if micros is not None:
        age = time.time() * 1_000_000 - int(micros)
        if enforce and age > MAX_AGE_MICROS:
            description = f"Event at index: [{index}] has timestamp_micros older than 72 hours."
            out.append(
                _msg(f"events[{index}].timestamp_micros", description, "VALUE_OUT_OF_BOUNDS")
            )
    params = event.get("params") or {}
    if len(params) > 25:
        description = f"Event at index: [{index}] has more than 25 params."
        out.append(_msg(f"events[{index}].params", description, "EXCEEDED_MAX_ENTITIES"))
    for key, value in params.items():
        where = f"events[{index}].params.{key}"
        if key != "items" and (not NAME.match(key) or key.startswith(RESERVED_PREFIXES)):
            description = f"Event at index: [{index}] has invalid param [{key}]."
            out.append(_msg(where, description, "NAME_INVALID"))
        if isinstance(value, str) and len(value) > VALUE_LIMITS.get(key, 100):
            description = f"Event at index: [{index}] has param [{key}] with a value too long."
            out.append(_msg(where, description, "VALUE_OUT_OF_BOUNDS"))
        if isinstance(value, dict) or (isinstance(value, list) and key != "items"):
            description = f"Event at index: [{index}] has param [{key}] of an invalid type."
            out.append(_msg(where, description, "VALUE_INVALID"))
    return out


def _user_data_messages(data: Any) -> list[dict[str, str]]:
    if data is None:
        return []
    if not isinstance(data, dict):
        return [_msg("user_data", "user_data must be an object.", "VALUE_INVALID")]
    out = []
    for key, values in data.items():
        where = f"user_data.{key}"
        if key not in USER_DATA_KEYS:
            out.append(_msg(where, f"Unknown field [{key}].", "VALUE_INVALID"))
        elif not isinstance(values, list):
            out.append(_msg(where, f"[{key}] must be a list.", "VALUE_INVALID"))
        elif key == "address":
            for address in values:
                unknown = set(address) - ADDRESS_KEYS if isinstance(address, dict) else {"?"}
                if unknown:
                    out.append(_msg(where, f"Unknown address fields {unknown}.", "VALUE_INVALID"))
        elif not all(isinstance(v, str) and HEX64.match(v) for v in values):
            description = f"[{key}] must hold SHA-256 hex digests."
            out.append(_msg(where, description, "VALUE_INVALID"))
    return out


def _msg(path: str, description: str, code: str) -> dict[str, str]:
    return {"fieldPath": path, "description": description, "validationCode": code}
