"""The server runs the alert rounds itself: a misconfigured destination reaches the webhook."""

from __future__ import annotations

import asyncio

from tests.conftest import running_app, settings_for
from tests.fakes.webhook import FakeWebhook

ROUNDS_TO_WAIT = 100  # of 0.1 s: the first round comes one interval (1 s) after start


async def test_the_server_evaluates_and_sends_without_being_asked(sqlite_url: str) -> None:
    with FakeWebhook() as receiver:
        alerts = {"interval_seconds": 1, "lease_seconds": 10, "webhook": {"url": receiver.url}}
        settings = settings_for(sqlite_url, alerts=alerts).model_copy(
            update={"misconfigured": {"meta": ["META_TOKEN"]}}
        )
        async with running_app(settings):
            for _ in range(ROUNDS_TO_WAIT):
                if receiver.messages:
                    break
                await asyncio.sleep(0.1)
        assert [m["alert"]["subject"] for m in receiver.messages] == ["meta"]
        assert receiver.messages[0]["text"].startswith("[FIRING] firstparty destination_setup")
