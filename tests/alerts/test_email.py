"""Alert email through a real local SMTP server (aiosmtpd): one message per fire and resolve."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from firstparty.alerts.loop import Evaluator
from firstparty.store import db
from tests.alerts.rows import Clock
from tests.conftest import settings_for


class Inbox:
    """aiosmtpd handler keeping every message it is given."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 OK"

    def messages(self) -> list[EmailMessage]:
        raw = [e.content for e in self.envelopes]
        found = [message_from_bytes(r, policy=policy.default) for r in raw if isinstance(r, bytes)]
        return [m for m in found if isinstance(m, EmailMessage)]


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    handler = Inbox()
    with socket.socket() as probe:  # a free port (aiosmtpd checks its own port once started)
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


def _email(port: int, **extra: Any) -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "port": port,
        "sender": "alerts@example.test",
        "to": ["ops@example.test", "oncall@example.test"],
        "starttls": False,
        **extra,
    }


async def _round(evaluator: Evaluator) -> Any:
    try:
        return await evaluator.round()
    finally:
        await evaluator.close()


def test_an_alert_is_emailed_when_it_fires_and_when_it_resolves(
    sqlite_url: str, inbox: tuple[Inbox, int]
) -> None:
    handler, port = inbox
    settings = settings_for(sqlite_url, alerts={"email": _email(port)})
    broken = settings.model_copy(update={"misconfigured": {"meta": ["META_TOKEN"]}})
    engine, clock = db.create_engine(sqlite_url), Clock()
    try:
        asyncio.run(_round(Evaluator(settings=broken, engine=engine, clock=clock)))
        clock.advance(minutes=30)
        asyncio.run(_round(Evaluator(settings=settings, engine=engine, clock=clock)))
        clock.advance(minutes=30)
        asyncio.run(_round(Evaluator(settings=settings, engine=engine, clock=clock)))
    finally:
        engine.dispose()
    subjects = [m["Subject"] for m in handler.messages()]
    assert subjects == [
        "[FIRING] firstparty destination_setup meta: environment variable(s) not set: META_TOKEN",
        "[RESOLVED] firstparty destination_setup meta: environment variable(s) not set: META_TOKEN",
    ]
    assert handler.envelopes[0].rcpt_tos == ["ops@example.test", "oncall@example.test"]
    assert "rule: destination_setup" in handler.messages()[0].get_content()


def test_starttls_refused_by_the_server_is_a_failed_notice_retried_later(
    sqlite_url: str, inbox: tuple[Inbox, int]
) -> None:
    handler, port = inbox
    settings = settings_for(sqlite_url, alerts={"email": _email(port, starttls=True)})
    broken = settings.model_copy(update={"misconfigured": {"meta": ["META_TOKEN"]}})
    engine = db.create_engine(sqlite_url)
    try:
        outcome = asyncio.run(_round(Evaluator(settings=broken, engine=engine, clock=Clock())))
    finally:
        engine.dispose()
    assert (outcome.sent, outcome.failed, handler.envelopes) == (0, 1, [])
