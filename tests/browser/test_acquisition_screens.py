"""The acquisition and funnel reports in headless Chromium, on a small shop's traffic sent to
/v1/events by browsers (each its own cookie jar) and a person verified on two devices;
screenshots for docs/admin.md."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from firstparty.reports import funnel_rounds
from firstparty.settings import Settings
from firstparty.store import db, migrate
from tests import factories
from tests.browser import harness
from tests.conftest import BROWSER_KEY, BROWSER_UA, running_app, settings_for
from tests.fakes import twilio as fake_twilio
from tests.identity.conftest import otp_config

ARTIFACTS = Path(__file__).parent / "artifacts"
TOKEN = "admin-token-for-tests"
SITE = "https://www.example.test"
E164 = "+16175550100"
CHECKOUT = {
    "name": "checkout",
    "steps": ["page /pricing", "event AddToCart", "event Purchase where value >= 50"],
    "window_hours": 24,
}
# (landing query, referrer, reaches: 1 pricing, 2 cart, 3 purchase, purchase value, currency)
VISITS: list[tuple[str, str | None, int, float, str]] = [
    ("?gclid=Cj0-a1&utm_source=google&utm_medium=cpc&utm_campaign=brand", None, 3, 129.0, "USD"),
    ("?gclid=Cj0-a2&utm_source=google&utm_medium=cpc&utm_campaign=brand", None, 3, 89.9, "USD"),
    ("?gclid=Cj0-a3&utm_source=google&utm_medium=cpc&utm_campaign=generic", None, 2, 0, ""),
    ("?gclid=Cj0-a4", None, 1, 0, ""),
    (
        "?fbclid=IwAR-b1&utm_source=facebook&utm_medium=paid&utm_campaign=autumn",
        None,
        3,
        45.0,
        "USD",
    ),
    (
        "?fbclid=IwAR-b2&utm_source=facebook&utm_medium=paid&utm_campaign=autumn",
        None,
        3,
        210.0,
        "EUR",
    ),
    ("?fbclid=IwAR-b3", None, 1, 0, ""),
    ("?utm_source=newsletter&utm_medium=email&utm_campaign=november", None, 3, 64.5, "USD"),
    ("?utm_source=newsletter&utm_medium=email&utm_campaign=november", None, 2, 0, ""),
    ("", "https://www.google.com/", 3, 99.0, "USD"),
    ("", "https://www.google.com/", 1, 0, ""),
    ("", "https://news.ycombinator.com/item?id=1", 3, 75.0, "USD"),
    ("", None, 3, 30.0, "USD"),
    ("", None, 1, 0, ""),
]


def _device(app: Any, n: int) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(f"198.51.100.{n}", 50000))
    headers = {"User-Agent": BROWSER_UA, "X-Write-Key": BROWSER_KEY, "Origin": SITE}
    return httpx.AsyncClient(
        transport=transport, base_url="https://t.example.test", headers=headers
    )


async def _send(client: httpx.AsyncClient, event: dict[str, Any]) -> None:
    answer = await client.post("/v1/events", json=event)
    assert answer.status_code == 202, answer.text


async def _journey(
    client: httpx.AsyncClient, query: str, referrer: str | None, reach: int, value: float, cur: str
) -> None:
    landing: dict[str, Any] = {"type": "page", "url": f"{SITE}/{query}"}
    if referrer:
        landing["referrer"] = referrer
    await _send(client, landing)
    await _send(client, {"type": "page", "url": f"{SITE}/pricing"})
    if reach >= 2:
        await _send(client, {"type": "track", "name": "AddToCart", "url": f"{SITE}/shop"})
    if reach >= 3:
        props = {"value": value, "currency": cur}
        purchase = {
            "type": "track",
            "name": "Purchase",
            "url": f"{SITE}/thanks",
            "properties": props,
        }
        await _send(client, purchase)


async def _seed(settings: Any, twilio: fake_twilio.FakeTwilio) -> None:
    async with running_app(settings) as app:
        for n, visit in enumerate(VISITS, 1):
            async with _device(app.app, n) as client:
                await _journey(client, *visit)
        async with _device(app.app, 100) as laptop, _device(app.app, 101) as phone:
            await _send(laptop, {"type": "page", "url": f"{SITE}/?gclid=Cj0-laptop"})
            for device in (laptop, phone):
                if device is phone:
                    query = "?utm_source=newsletter&utm_medium=email&utm_campaign=november"
                    await _send(phone, {"type": "page", "url": f"{SITE}/{query}"})
                assert (await device.post("/v1/otp/start", json={"phone": E164})).status_code == 202
                code = twilio.last_code(E164)
                verified = await device.post("/v1/otp/verify", json={"phone": E164, "code": code})
                assert verified.status_code == 200, verified.text
            await _journey(phone, "", None, 3, 149.0, "USD")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Settings]]:
    from firstparty.app import create_app

    harness.require_browser()
    url = f"sqlite:///{tmp_path / 'firstparty.db'}"
    engine = db.create_engine(url, poolclass=sa.NullPool)
    migrate.upgrade(engine)
    engine.dispose()
    with fake_twilio.FakeTwilio() as twilio:
        settings = settings_for(
            url,
            destinations=[factories.META_CAPI | {"dry_run": True}],
            funnels=[CHECKOUT],
            otp=otp_config(twilio),
        )
        asyncio.run(_seed(settings, twilio))
    app = create_app(settings, run_worker=False)
    with harness.ServerThread(app, harness.certificate(tmp_path)) as server:
        yield f"https://127.0.0.1:{server.port}", settings


def test_acquisition_and_funnel_pages(served: tuple[str, Settings]) -> None:
    served_url, settings = served
    ARTIFACTS.mkdir(exist_ok=True)
    with harness.admin_page(served_url, TOKEN, height=900) as page:
        page.goto(f"{served_url}/admin/reports")
        page.click("#more-reports a:has-text('Acquisition')")
        page.wait_for_url("**/admin/reports/acquisition?*")
        assert page.inner_text("#total") == "9"
        assert "1 (11.1 %)" in page.inner_text("#cross-device")
        channel_rows = page.locator("#by-channel tbody tr")
        assert channel_rows.count() >= 6
        assert "EUR 210.00" in page.inner_text("#by-channel")
        assert page.evaluate("document.documentElement.scrollWidth") <= 1280
        page.screenshot(path=str(ARTIFACTS / "admin-acquisition.png"), full_page=True)

        page.goto(f"{served_url}/admin/reports/funnels")
        page.click("#funnels a:has-text('checkout')")
        page.wait_for_url("**/admin/reports/funnels/checkout?*")
        # No background round has run yet: the page says so, and when the next one comes.
        assert "Not computed yet" in page.inner_text("#pending")
        assert page.locator("#steps").count() == 0
        page.screenshot(path=str(ARTIFACTS / "admin-funnel-pending.png"), full_page=True)
        page.click("#recompute button")
        page.wait_for_url("**/admin/reports/funnels/checkout?range=14d*")
        assert page.locator("#pending").count() == 1
        engine = db.create_engine(settings.database_url, poolclass=sa.NullPool)
        try:  # the round the server would run within a minute
            refresher = funnel_rounds.Refresher(settings=settings, engine=engine)
            with concurrent.futures.ThreadPoolExecutor(1) as pool:  # Playwright holds a loop here
                [done] = pool.submit(asyncio.run, refresher.round()).result()
        finally:
            engine.dispose()
        assert done.funnel == "checkout" and not done.capped
        page.reload()
        assert "Computed just now" in page.inner_text("#computed")
        counts = page.locator("#steps tbody tr td:nth-child(3)").all_inner_texts()
        assert counts == ["15", "11", "7"]  # value >= 50: 45 and 30 are not
        assert page.evaluate("document.documentElement.scrollWidth") <= 1280
        page.screenshot(path=str(ARTIFACTS / "admin-funnel.png"), full_page=True)
        page.goto(f"{served_url}/admin/reports/funnels")
        assert "computed just now" in page.inner_text("#funnels")
        page.screenshot(path=str(ARTIFACTS / "admin-funnels.png"), full_page=True)
