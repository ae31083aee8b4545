"""The real app with OTP on a fake Twilio, a settable clock, and devices (cookie jar + address)."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from firstparty.app import create_app
from firstparty.settings import Settings
from tests.conftest import BROWSER_KEY, BROWSER_UA, settings_for
from tests.fakes import twilio as fake_twilio

SITE = "https://www.example.test"  # the browser source's origin (tests.conftest.base_config)


class Clock:
    """A clock the test moves by hand (expiry without sleeping)."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def otp_config(twilio: fake_twilio.FakeTwilio, **overrides: Any) -> dict[str, Any]:
    """An `[otp]` section on the fake Twilio's Messages API, limits loose unless overridden."""
    config: dict[str, Any] = {
        "provider": "twilio_sms",
        "account_sid": fake_twilio.ACCOUNT_SID,
        "auth_token": fake_twilio.AUTH_TOKEN,
        "from_number": fake_twilio.FROM_NUMBER,
        "service_sid": fake_twilio.SERVICE_SID,
        "api_base": twilio.url,
        "resend_interval_seconds": 0,
        "sends_per_phone_per_hour": 100,
        "sends_per_ip_per_hour": 100,
        "phones_per_ip_per_day": 100,
        "verifies_per_ip_per_hour": 100,
        "verifies_per_phone_per_hour": 100,
        "sends_per_visitor_per_hour": 100,
    }
    config.update(overrides)
    return config


class OtpApp:
    """The running app, its settings, clock and fake Twilio; `device()` makes a browser."""

    def __init__(self, app: Any, settings: Settings, clock: Clock, twilio: Any) -> None:
        self.app = app
        self.settings = settings
        self.clock = clock
        self.twilio: fake_twilio.FakeTwilio = twilio
        self.engine: sa.Engine = app.state.runtime.engine
        self._clients: list[httpx.AsyncClient] = []
        self.refused_before: Counter[str] = Counter()

    def device(self, ip: str = "198.51.100.7", **headers: str) -> httpx.AsyncClient:
        """A browser at this address on the site's page (its key and origin), with its own
        cookie jar; `headers` add to or replace those it sends."""
        transport = httpx.ASGITransport(app=self.app, client=(ip, 50000))
        sent = {"User-Agent": BROWSER_UA, "X-Write-Key": BROWSER_KEY, "Origin": SITE, **headers}
        client = httpx.AsyncClient(
            transport=transport,
            base_url="https://t.example.test",
            headers={k: v for k, v in sent.items() if v},
        )
        self._clients.append(client)
        return client

    async def start(self, device: httpx.AsyncClient, phone: str) -> httpx.Response:
        return await device.post("/v1/otp/start", json={"phone": phone})

    async def verify(self, device: httpx.AsyncClient, phone: str, code: str) -> httpx.Response:
        return await device.post("/v1/otp/verify", json={"phone": phone, "code": code})

    async def login(self, device: httpx.AsyncClient, phone: str, e164: str) -> str:
        """Start and verify with the code the phone got; the user_id."""
        assert (await self.start(device, phone)).status_code == 202
        answer = await self.verify(device, phone, self.twilio.last_code(e164))
        assert answer.status_code == 200, answer.text
        user_id: str = answer.json()["user_id"]
        return user_id

    async def refused(self) -> Counter[str]:
        """firstparty_otp_refused_total by reason since this app started (GET /metrics)."""
        counts = await self.refused_in_process()
        counts.subtract(self.refused_before)
        return counts

    async def refused_in_process(self) -> Counter[str]:
        answer = await self.device().get("/metrics")
        counts: Counter[str] = Counter()
        for family in text_string_to_metric_families(answer.text):
            for sample in family.samples:
                if sample.name == "firstparty_otp_refused_total":
                    counts[sample.labels["reason"]] = int(sample.value)
        return counts

    def rows(self, table: sa.Table) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(sa.select(table)).mappings())

    async def close(self) -> None:
        for client in self._clients:
            await client.aclose()


@pytest.fixture
def twilio() -> Iterator[fake_twilio.FakeTwilio]:
    with fake_twilio.FakeTwilio() as fake:
        assert isinstance(fake, fake_twilio.FakeTwilio)
        yield fake


@contextlib.asynccontextmanager
async def otp_app(
    url: str, twilio: fake_twilio.FakeTwilio, collect: dict[str, Any] | None = None, **otp: Any
) -> AsyncIterator[OtpApp]:
    """The real app with this `[otp]` section (on top of `otp_config`) and `[collect]`."""
    settings = settings_for(url, otp=otp_config(twilio, **otp), collect=collect or {})
    app = create_app(settings, run_worker=False)
    clock = Clock()
    app.state.clock = clock
    async with app.router.lifespan_context(app):
        running = OtpApp(app, settings, clock, twilio)
        running.refused_before = await running.refused_in_process()
        try:
            yield running
        finally:
            await running.close()
