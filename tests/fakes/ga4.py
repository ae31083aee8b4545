"""A fake of the GA4 Measurement Protocol (destinations.md §4).

    POST /mp/collect?measurement_id=…&api_secret=…        always 204, as Google does
    POST /debug/mp/collect?measurement_id=…&api_secret=…  200 {"validationMessages": [...]}

Both endpoints run the same checks (§4.2 to §4.4). The production one answers 204 regardless, as
Google does, but keeps the events that passed them (with the right measurement id and secret)
in `fake.accepted` and the messages in `fake.messages`, so tests can assert what GA4 would
have counted. Failures: `fake.script(Reply(503))`, `fake.script(Reply(429, headers=...))`.
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


class FakeGA4(FakeServer):
    """The Measurement Protocol collection and validation endpoints."""

    def __init__(self, measurement_id: str = "G-ABC123XYZ", api_secret: str = "s3cr3t") -> None:
        super().__init__()
        self.measurement_id = measurement_id
        self.api_secret = api_secret
        self.accepted: list[dict[str, Any]] = []  # {"client_id", "user_id", "event"} per event
        self.messages: list[dict[str, str]] = []

    def handle(self, request: Received) -> Reply:
        if request.method != "POST" or request.path not in ("/mp/collect", "/debug/mp/collect"):
            return Reply(404, b"Not Found")
        try:
            body = json.loads(request.body)
        except ValueError:
            body = None
        messages = (
            validate(body)
            if isinstance(body, dict)
            else [_msg("", "Invalid JSON.", "VALUE_INVALID")]
        )
        if request.path == "/debug/mp/collect":
            return Reply(200, {"validationMessages": messages})
        self.messages += messages
        ids_ok = request.query.get("measurement_id") == [self.measurement_id]
        if not messages and ids_ok and request.query.get("api_secret") == [self.api_secret]:
            assert isinstance(body, dict)
            for event in body["events"]:
                self.accepted.append(
                    {"client_id": body["client_id"], "user_id": body.get("user_id"), "event": event}
                )
        return Reply(204)


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


def _msg(path: str, description: str, code: str) -> dict[str, str]:
    return {"fieldPath": path, "description": description, "validationCode": code}
