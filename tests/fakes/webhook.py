"""A chat incoming webhook (Slack, Google Chat) as a real local server, strict about what it takes:
POST, a JSON object with a non-empty `text`, and, when the fake has a secret, a valid
`X-Firstparty-Signature` (HMAC-SHA256 of the body); anything else is answered 400 or 401."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from tests.fakes.server import FakeServer, Received, Reply


class FakeWebhook(FakeServer):
    def __init__(self, secret: str | None = None) -> None:
        super().__init__()
        self.secret = secret
        self.messages: list[dict[str, Any]] = []  # the bodies answered 200, in order

    def handle(self, request: Received) -> Reply:
        if request.method != "POST" or request.headers.get("content-type") != "application/json":
            return Reply(400, {"error": "POST application/json only"})
        if self.secret is not None and not self._signed(request):
            return Reply(401, {"error": "bad signature"})
        try:
            body = json.loads(request.body)
        except ValueError:
            return Reply(400, {"error": "not JSON"})
        if not isinstance(body, dict) or not isinstance(body.get("text"), str) or not body["text"]:
            return Reply(400, {"error": "no text"})
        self.messages.append(body)
        return Reply(200, b"ok")

    def _signed(self, request: Received) -> bool:
        assert self.secret is not None
        expected = hmac.new(self.secret.encode(), request.body, hashlib.sha256).hexdigest()
        given = request.headers.get("x-firstparty-signature", "")
        return hmac.compare_digest(given, "sha256=" + expected)
