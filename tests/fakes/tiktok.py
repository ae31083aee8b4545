"""A fake TikTok Events API 2.0 serving `POST /open_api/v1.3/event/track/` (destinations.md 2).

A bad `Access-Token` gets HTTP 401 with an empty body; every other refusal is HTTP 200 with a
non-zero `code`, as TikTok does (section 2.9). The success body and the 40001/40002 messages are
TikTok's (40002 names the event as `data.<index>.`, an adapted path, unconfirmed); the wording of
the fake's other 40002 checks is its own. A `price` in `contents` that is not a number fails the
request with TikTok's `40000 "Invalid Price Field"`, which names no event (section 6).

Options for what TikTok leaves unconfirmed: `batch_test_events` (False: test events must come
one per request), `max_age_days`, and `partial_success`: events that fail a check are then left
out and the others taken, answered `20001` with the failed events' paths in `message` and in
`data.failed_events` (TikTok documents 20001 as partial success; the layout is the fake's).
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Callable
from typing import Any

from .server import FakeServer, Received, Reply

PIXEL_CODE = "CABCDEFGHIJ123456789"
ACCESS_TOKEN = "tt-fake-access-token"
HASHED = {"email", "phone", "external_id", "first_name", "last_name", "zip_code"}
PLAIN = {"ttclid", "ttp", "ip", "user_agent", "locale", "city", "state", "country"}
EVENT_FIELDS = {"event", "event_time", "event_id", "user", "properties", "page"}
EVENT_FIELDS |= {"limited_data_use", "lead", "app", "ad"}
SHA256 = re.compile(r"^[a-f0-9]{64}$")
DAY = 86_400


def _named(index: int, message: str) -> str:
    """The message with the event's path in front, unless it already starts with it."""
    return message if message.startswith(f"data.{index}.") else f"data.{index}: {message}"


class TikTokError(Exception):
    """A business error to answer with HTTP 200 and this code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class FakeTikTok(FakeServer):
    """TikTok's Events API for one pixel and one token."""

    def __init__(
        self,
        *,
        pixel_code: str = PIXEL_CODE,
        access_token: str = ACCESS_TOKEN,
        base_path: str = "/open_api/v1.3",
        batch_test_events: bool = True,
        max_age_days: float | None = None,
        now: Callable[[], float] = time.time,
        partial_success: bool = False,
    ) -> None:
        super().__init__()
        self.partial_success = partial_success
        self.test_event_codes: list[str | None] = []  # per accepted request
        self.pixel_code, self.access_token, self.base_path = pixel_code, access_token, base_path
        self.batch_test_events, self.max_age_days, self.now = batch_test_events, max_age_days, now
        self.events: list[dict[str, Any]] = []  # every event accepted, in order
        self._ids = (f"2026010112000{n:06d}FAKE" for n in itertools.count())

    @property
    def api_base(self) -> str:
        return self.url + self.base_path

    def handle(self, request: Received) -> Reply:
        if request.method != "POST" or request.path != f"{self.base_path}/event/track/":
            return Reply(404, b"")
        if request.headers.get("access-token") != self.access_token:
            return Reply(401, b"")
        try:
            body, failed = self._accept(request)
        except TikTokError as error:
            return self.business_error(error.code, error.message)
        self.events.extend(e for i, e in enumerate(body["data"]) if i not in failed)
        self.test_event_codes.append(body.get("test_event_code"))
        if failed:
            paths = "; ".join(failed.values())
            return Reply(
                200,
                {
                    "code": 20001,
                    "message": f"Partial success. Failed events: {paths}",
                    "request_id": next(self._ids),
                    "data": {
                        "failed_events": [
                            {"index": i, "message": m} for i, m in sorted(failed.items())
                        ]
                    },
                },
            )
        return Reply(200, {"code": 0, "message": "OK", "request_id": next(self._ids), "data": {}})

    def business_error(self, code: int, message: str) -> Reply:
        """TikTok's refusal: HTTP 200 with a non-zero code (section 2.9)."""
        return Reply(200, {"code": code, "message": message, "request_id": next(self._ids)})

    # ------------------------------------------------------------ the checks

    def _accept(self, request: Received) -> tuple[dict[str, Any], dict[int, str]]:
        """The body and, with `partial_success`, the events left out (index -> message)."""
        try:
            body = json.loads(request.body)
        except ValueError:
            raise TikTokError(40002, "Invalid JSON body") from None
        if not isinstance(body, dict) or body.get("event_source") != "web":
            raise TikTokError(40002, "event_source: Must be one of: web, app, offline, crm.")
        if body.get("event_source_id") != self.pixel_code:
            raise TikTokError(
                40001,
                f"No permission to operate pixel code: {body.get('event_source_id')}. "
                "You must be an admin or operator of this advertiser account.",
            )
        data = body.get("data")
        if not isinstance(data, list) or not 1 <= len(data) <= 1000:
            raise TikTokError(40002, "data: Length must be between 1 and 1000.")
        if body.get("test_event_code") and len(data) > 1 and not self.batch_test_events:
            raise TikTokError(40002, "test_event_code: test events cannot be batched.")
        failed: dict[int, TikTokError] = {}
        for index, event in enumerate(data):
            try:
                self._check_event(f"data.{index}", event)
            except TikTokError as error:
                if not self.partial_success:
                    raise
                failed[index] = error
        if failed and len(failed) == len(data):
            raise next(iter(failed.values()))
        return body, {i: _named(i, e.message) for i, e in failed.items()}

    def _check_event(self, where: str, event: Any) -> None:
        if not isinstance(event, dict):
            raise TikTokError(40002, f"{where}: Not a valid mapping type.")
        unknown = set(event) - EVENT_FIELDS
        if unknown:
            raise TikTokError(40002, f"{where}.{sorted(unknown)[0]}: Unknown field.")
        if not isinstance(event.get("event"), str) or not event["event"]:
            raise TikTokError(40002, f"{where}.event: Missing data for required field.")
        event_time = event.get("event_time")
        if not isinstance(event_time, int) or isinstance(event_time, bool):
            raise TikTokError(40002, f"{where}.event_time: Not a valid integer.")
        if self.max_age_days is not None and self.now() - event_time > self.max_age_days * DAY:
            raise TikTokError(40002, f"{where}.event_time: Event is too old.")
        if "event_id" in event and not isinstance(event["event_id"], str):
            raise TikTokError(40002, f"{where}.event_id: Not a valid string.")
        self._check_user(f"{where}.user", event.get("user", {}))
        page = event.get("page", {})
        if not isinstance(page, dict) or not all(isinstance(v, str) for v in page.values()):
            raise TikTokError(40002, f"{where}.page: url and referrer must be strings.")
        self._check_properties(f"{where}.properties", event.get("properties", {}))
        if "limited_data_use" in event and not isinstance(event["limited_data_use"], bool):
            raise TikTokError(40002, f"{where}.limited_data_use: Not a valid boolean.")

    def _check_user(self, where: str, user: Any) -> None:
        if not isinstance(user, dict):
            raise TikTokError(40002, f"{where}: Not a valid mapping type.")
        for key, value in user.items():
            if key in HASHED:
                values = value if isinstance(value, list) else [value]
                if not all(isinstance(v, str) and SHA256.match(v) for v in values):
                    raise TikTokError(40002, f"{where}.{key}: Must be hashed with SHA-256.")
            elif key in PLAIN:
                if not isinstance(value, str):
                    raise TikTokError(40002, f"{where}.{key}: Not a valid string.")
            else:
                raise TikTokError(40002, f"{where}.{key}: Unknown field.")

    def _check_properties(self, where: str, props: Any) -> None:
        if not isinstance(props, dict):
            raise TikTokError(40002, f"{where}: Not a valid mapping type.")
        value = props.get("value")
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise TikTokError(40002, f"{where}.value: Not a valid number.")
        currency = props.get("currency")
        if currency is not None and not re.fullmatch(r"[A-Za-z]{3}", str(currency)):
            raise TikTokError(40002, f"{where}.currency: Not a valid ISO 4217 code.")
        for j, item in enumerate(props.get("contents") or []):
            if "content_id" in item and not isinstance(item["content_id"], str):
                raise TikTokError(40002, f"{where}.contents.{j}.content_id: Not a valid string")
            price = item.get("price")
            if price is not None and (
                isinstance(price, bool) or not isinstance(price, int | float)
            ):
                raise TikTokError(40000, "Invalid Price Field")
        ids = props.get("content_ids")
        if ids is not None and not all(isinstance(i, str) for i in ids):
            raise TikTokError(40002, f"{where}.content_ids: Not a valid list of strings.")
