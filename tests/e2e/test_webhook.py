"""A webhook destination end to end: the receiver checks the HMAC over the raw body it got."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Iterator

import pytest

from tests.conftest import settings_for
from tests.e2e.journey import SITE, Browser, admin, all_settled, outcomes, serving
from tests.fakes.server import FakeServer, Received, Reply

SECRET = "hook-secret-for-e2e-0123456789"
FAST = {"backoff_base_seconds": 0.01, "backoff_max_seconds": 0.05, "sweep_interval_seconds": 0.1}


class HookReceiver(FakeServer):
    """Someone's endpoint: accepts only bodies signed with its secret, as the docs tell it to."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret.encode()
        self.verified: list[Received] = []

    def handle(self, request: Received) -> Reply:
        mac = hmac.new(self.secret, request.body, hashlib.sha256).hexdigest()
        signature = request.headers.get("x-firstparty-signature", "")
        if not hmac.compare_digest(signature, f"sha256={mac}"):
            return Reply(401, b"signature does not match")
        self.verified.append(request)
        return Reply(204)


@pytest.fixture
def hook() -> Iterator[HookReceiver]:
    with HookReceiver(SECRET) as receiver:
        yield receiver


def webhook(url: str) -> dict[str, str]:
    return {"name": "crm-hook", "type": "webhook", "url": url + "/firstparty", "secret": SECRET}


async def test_the_receiver_gets_a_signed_body_and_the_log_shows_it(
    sqlite_url: str, hook: HookReceiver
) -> None:
    settings = settings_for(sqlite_url, destinations=[webhook(hook.url)], delivery=FAST)
    event_id = str(uuid.uuid4())
    async with serving(settings) as app, Browser(app) as browser:
        await browser.send(
            {
                "type": "track",
                "name": "Lead",
                "event_id": event_id,
                "url": f"{SITE}/apply",
                "user": {"email": "Jane@Example.com"},
                "properties": {"value": 12.5},
            }
        )
        await all_settled(app.engine, count=1)
        logged = await admin(app, "/v1/admin/tracks", destination="crm-hook")
        got = outcomes(app.engine)

    assert got == {(event_id, "crm-hook"): ("delivered", None)}
    [request] = hook.verified
    assert len(hook.requests) == 1 and request.path == "/firstparty"
    assert request.headers["x-firstparty-event-id"] == event_id
    body = json.loads(request.body)
    assert body["event_id"] == event_id and body["name"] == "Lead"
    assert request.body == json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    assert b"Jane@Example.com".lower() not in request.body.lower()  # only hashes leave
    [track] = logged["items"]
    assert (track["status"], track["response_status"], track["event_ids"]) == (
        "delivered",
        204,
        [event_id],
    )
    assert SECRET not in json.dumps(track)


async def test_a_receiver_that_cannot_verify_fails_the_work_with_its_answer(
    sqlite_url: str,
) -> None:
    with HookReceiver("another-secret-the-sender-lacks") as stranger:
        settings = settings_for(sqlite_url, destinations=[webhook(stranger.url)], delivery=FAST)
        async with serving(settings) as app, Browser(app) as browser:
            sent = await browser.send({"type": "track", "name": "Lead", "url": f"{SITE}/x"})
            await all_settled(app.engine, count=1)
            got = outcomes(app.engine)

    status, reason = got[(sent["event_id"], "crm-hook")]
    assert status == "failed" and reason is not None and "signature does not match" in reason
    assert stranger.verified == [] and len(stranger.requests) == 1
