"""Destination type "webhook": POST each event as JSON to a URL of yours, signed.

One event per request (`max_batch` 1), so a receiver answers for exactly one event. The body is
`base.event_json(event)` encoded compactly with sorted keys, and the request carries:

    Content-Type: application/json
    X-Firstparty-Event-Id: <event_id>            the same on every resend: deduplicate on it
    X-Firstparty-Signature: sha256=<hex HMAC-SHA256(secret, raw body)>

Verify by recomputing the HMAC over the raw body bytes with the shared `secret` and comparing in
constant time. Answer 2xx when stored; 408, 429 (with `Retry-After`) and 5xx are retried; any
other status fails the work with the body as the reason (replayable).

    [[destinations]]
    name = "crm-hook"
    type = "webhook"
    url = "https://hooks.example.com/firstparty"
    secret = "env:HOOK_SECRET"
    events = { Lead = "Lead" }   # optional: only these events, renamed; all events when absent

Not an ad platform: robots' events are sent too (`forward_bots` defaults to true here), with the
body's "bot" naming why (null for a person; docs/bots.md).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from firstparty.destinations.base import (
    Adapter,
    DestinationSettings,
    Outcome,
    OutgoingRequest,
    Response,
    event_json,
    status_outcome,
)
from firstparty.event import Event


class WebhookSettings(DestinationSettings):
    type: Literal["webhook"] = "webhook"
    url: str
    secret: SecretStr = Field(min_length=16)
    forward_bots: bool = True  # not an ad platform: robots too, named by the body's "bot"

    @field_validator("url")
    @classmethod
    def _is_http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("url must start with http:// or https://")
        return value


def signature(secret: str, body: bytes) -> str:
    """The `X-Firstparty-Signature` header value for this body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookAdapter(Adapter):
    type = "webhook"
    settings_model = WebhookSettings
    max_batch = 1
    settings: WebhookSettings

    def build(self, events: Sequence[Event], token: str | None = None) -> list[OutgoingRequest]:
        return [self._request(event) for event in events]

    def _request(self, event: Event) -> OutgoingRequest:
        payload = event_json(event, self.settings.mapped_name(event.name))
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Firstparty-Event-Id": event.event_id,
            "X-Firstparty-Signature": signature(self.settings.secret.get_secret_value(), body),
        }
        return OutgoingRequest("POST", self.settings.url, (event.pk,), headers=headers, body=body)

    def interpret(self, request: OutgoingRequest, response: Response) -> dict[str, Outcome]:
        outcome = status_outcome(response)
        return {pk: outcome for pk in request.event_pks}
