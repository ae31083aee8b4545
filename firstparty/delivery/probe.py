"""Send a test event: one synthetic conversion through a destination's real adapter and sender.

`firstparty destinations test NAME` (and the admin UI's button) build a `Lead` carrying the
identifiers a real one would (a hashed test email, an IP, a user agent, a click id of the
platform), send it with the destination's own settings put in the platform's test mode where it
has one, and return every request exactly as logged (secrets masked) with the platform's answer.

Test modes: Google Ads and GA4 (`validate_only`: the platform validates and records nothing);
Meta and TikTok (`test_event_code`: the event shows under Test events and counts no conversion),
which needs the code from the platform's Test events tab — without one, nothing is sent unless
`live` is asked for. The webhook has no test mode: it is sent as is (the receiver is yours).
Nothing is written to the database: the synthetic event is not stored, delivered or counted.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from firstparty import ids
from firstparty.delivery.outbox import Claim, DeliveryStatus
from firstparty.delivery.send import Sender, Settled
from firstparty.delivery.track import Sent, redact, redact_json
from firstparty.destinations import registry
from firstparty.destinations.base import DestinationSettings
from firstparty.errors import ConfigError
from firstparty.event import ClickId, Event
from firstparty.settings import DeliverySettings

TEST_EMAIL = "test@example.com"
CLICK_IDS = {"meta_capi": "fbclid", "google_ads": "gclid", "tiktok_events": "ttclid"}


@dataclass(frozen=True)
class Exchange:
    """One request as sent (secrets masked) and the platform's answer."""

    method: str
    url: str
    request: Any
    status: int | None
    response: str | None
    error: str | None
    duration_ms: float | None


@dataclass(frozen=True)
class Probe:
    destination: str
    mode: str  # how it was sent: the platform's test mode, or "live"
    status: str  # the delivery status the answer decided (delivered, test, failed, ...)
    detail: str | None  # the platform's reason, as the request log keeps it
    exchanges: list[Exchange]

    @property
    def ok(self) -> bool:
        return self.status in (DeliveryStatus.DELIVERED, DeliveryStatus.TEST)


def test_settings(
    settings: DestinationSettings, *, code: str | None, live: bool
) -> tuple[DestinationSettings, str]:
    """The destination's settings in its platform's test mode, and that mode's name."""
    fields = type(settings).model_fields
    changes: dict[str, Any] = {"dry_run": False}
    if "validate_only" in fields:
        changes["validate_only"] = True
        mode = "validate_only (the platform validates and records nothing)"
    elif "test_event_code" in fields:
        given = code or getattr(settings, "test_event_code", None)
        if not given and not live:
            raise ConfigError(
                f"{settings.name}: {settings.type} has a test mode only with a test event code "
                "(from the platform's Test events tab): pass --test-event-code CODE, or --live "
                "to send a real conversion"
            )
        changes["test_event_code"] = given
        mode = f"test_event_code={given}" if given else "live (no test event code)"
    else:
        mode = "live (this destination has no test mode)"
    return settings.model_copy(update=changes), mode


def synthetic_event(kind: str, name: str, now: datetime) -> Event:
    """A fresh browser `Lead` with the identifiers a real one carries (test values)."""
    click = CLICK_IDS.get(kind)
    seen = now - timedelta(hours=1)
    clicks = (ClickId(click, f"firstparty-test-{click}", seen),) if click else ()
    return Event(
        pk=ids.new_id(),
        event_id=f"firstparty-test-{uuid.uuid4()}",
        type="track",
        name=name,
        source="firstparty-test",
        source_kind="browser",
        occurred_at=now - timedelta(seconds=5),
        received_at=now - timedelta(seconds=5),
        url="https://www.example.com/firstparty-test",
        properties={"value": 1.0, "currency": "USD"},
        user={"em": hashlib.sha256(TEST_EMAIL.encode()).hexdigest()},
        context={
            "ip": "203.0.113.9",
            "user_agent": "Mozilla/5.0 (firstparty test event)",
            "fbp": f"fb.1.{int(now.timestamp() * 1000)}.1234567890",
            "ga": f"GA1.1.1234567890.{int(now.timestamp())}",
        },
        consent={"ad_user_data": "granted", "ad_personalization": "granted"},
        visitor_id="firstpartytestvisitor",
        click_ids=clicks,
    )


async def send_test_event(
    destination: DestinationSettings,
    *,
    delivery: DeliverySettings,
    code: str | None = None,
    live: bool = False,
    now: datetime | None = None,
) -> Probe:
    """Send one synthetic event to `destination` and report the requests and answers."""
    when = now or datetime.now(UTC)
    settings, mode = test_settings(destination, code=code, live=live)
    adapter = registry.adapter_for(settings)
    event = synthetic_event(settings.type, _first_name(settings), when)
    claim = Claim(0, event.pk, settings.name, 1, when)
    settled: list[Settled] = []

    async def keep(found: Settled) -> None:
        settled.append(found)

    sender = Sender(delivery)
    try:
        await sender.deliver(adapter, [claim], {event.pk: event}, keep)
    finally:
        await sender.close()
    status, detail = _outcome(settled)
    return Probe(settings.name, mode, status, detail, _exchanges(settled))


def _first_name(settings: DestinationSettings) -> str:
    """`Lead` when the destination maps it, else the first name it maps."""
    if settings.mapped_name("Lead") is not None:
        return "Lead"
    names = list(_mapping(settings))
    return names[0] if names else "Lead"


def _mapping(settings: DestinationSettings) -> Mapping[str, Any]:
    for field in ("events", "conversion_actions"):
        found = getattr(settings, field, None)
        if isinstance(found, Mapping) and found:
            return found
    return {}


def _outcome(settled: list[Settled]) -> tuple[str, str | None]:
    finishes = [f for s in settled for f in s.finishes]
    if not finishes:
        return "no answer", None
    return str(finishes[-1].status), finishes[-1].last_error


def _exchanges(settled: list[Settled]) -> list[Exchange]:
    return [_exchange(sent) for s in settled for sent in s.sent]


def _exchange(sent: Sent) -> Exchange:
    request = sent.request
    body = redact_json(request.json, request.secrets) if request.json is not None else None
    answer = sent.response_body.decode("utf-8", "replace") if sent.response_body else None
    return Exchange(
        method=request.method,
        url=redact(request.url, request.secrets),
        request=body,
        status=sent.response_status,
        response=redact(answer, request.secrets) if answer else answer,
        error=sent.error,
        duration_ms=sent.duration_ms,
    )
