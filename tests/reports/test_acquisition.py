"""The acquisition report through the real app on SQLite and PostgreSQL, from events sent to
/v1/events by browsers with their own cookie jars: first and last touch, values per currency,
a conversion on a verified person's second device counted cross-device, what first-party
collection recovered per platform, the page, the CSV and bad queries."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from firstparty.app import create_app
from firstparty.reports import acquisition, funnel_spec, funnels, period, summary
from firstparty.reports import conversion_rollups as conversion_rollups_mod
from firstparty.store.models import click_ids, conversion_rollups
from firstparty.web import acquisition as acquisition_ui
from tests import factories
from tests.conftest import BROWSER_KEY, BROWSER_UA, make_database, settings_for
from tests.fakes import twilio as fake_twilio
from tests.identity.conftest import otp_config
from tests.web.test_admin_ui import signed_in_page

SITE = "https://www.example.test"
E164 = "+16175550100"
# Only purchases are conversions here: the destination maps nothing else.
META = factories.META_CAPI | {"dry_run": True, "events": {"Purchase": "Purchase"}}


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from make_database(str(request.param), tmp_path, migrated=True)


@pytest.fixture
def twilio() -> Iterator[fake_twilio.FakeTwilio]:
    with fake_twilio.FakeTwilio() as fake:
        yield fake


class Shop:
    """The running app, a way to make browsers (each its own cookie jar), and the report."""

    def __init__(self, app: Any, twilio: fake_twilio.FakeTwilio) -> None:
        self.app = app
        self.twilio = twilio
        self.engine: sa.Engine = app.state.runtime.engine
        self.clients: list[httpx.AsyncClient] = []

    def device(self, ip: str = "198.51.100.7") -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, client=(ip, 50000))
        headers = {"User-Agent": BROWSER_UA, "X-Write-Key": BROWSER_KEY, "Origin": SITE}
        client = httpx.AsyncClient(
            transport=transport, base_url="https://t.example.test", headers=headers
        )
        self.clients.append(client)
        return client

    async def login(self, device: httpx.AsyncClient) -> str:
        """Verify the phone from this device; the user id."""
        assert (await device.post("/v1/otp/start", json={"phone": E164})).status_code == 202
        code = self.twilio.last_code(E164)
        answer = await device.post("/v1/otp/verify", json={"phone": E164, "code": code})
        assert answer.status_code == 200, answer.text
        return str(answer.json()["user_id"])

    def report(self) -> acquisition.Acquisition:
        return acquisition.acquisition(self.engine, period=self.period())

    def recovered(self) -> dict[str, acquisition.Recovered]:
        found = acquisition.recovered(self.engine, period=self.period())
        return {p.platform: p for p in found}

    def period(self, source: str = "") -> period.Period:
        query = {"range": "7d", "source": source}
        return period.parse(query, default_zone="UTC", now=datetime.now(UTC))


@contextlib.asynccontextmanager
async def shop(url: str, twilio: fake_twilio.FakeTwilio) -> AsyncIterator[Shop]:
    settings = settings_for(url, otp=otp_config(twilio), destinations=[META])
    app = create_app(settings, run_worker=False)
    async with app.router.lifespan_context(app):
        running = Shop(app, twilio)
        try:
            yield running
        finally:
            for client in running.clients:
                await client.aclose()


async def visit(device: httpx.AsyncClient, query: str = "", **fields: Any) -> None:
    event = {"type": "page", "url": f"{SITE}/{query}"} | fields
    answer = await device.post("/v1/events", json=event)
    assert answer.status_code == 202, answer.text


async def buy(
    device: httpx.AsyncClient, value: str | float, currency: str = "usd", **context: str
) -> None:
    event: dict[str, Any] = {
        "type": "track",
        "name": "Purchase",
        "url": f"{SITE}/thanks",
        "properties": {"value": value, "currency": currency},
    }
    if context:
        event["context"] = context
    answer = await device.post("/v1/events", json=event)
    assert answer.status_code == 202, answer.text


def summed_rows(rows: list[Any]) -> dict[tuple[Any, str], tuple[int, int]]:
    """(hour, key) -> (count, value) summed over shards."""
    found: dict[tuple[Any, str], tuple[int, int]] = {}
    for r in rows:
        count, value = found.get((r["hour"], r["key"]), (0, 0))
        found[(r["hour"], r["key"])] = (count + r["count"], value + r["value_micros"])
    return found


def summed(engine: sa.Engine) -> dict[tuple[Any, str], tuple[int, int]]:
    with engine.connect() as conn:
        return summed_rows(list(conn.execute(sa.select(conversion_rollups)).mappings()))


def line(lines: list[acquisition.Line], *label: str) -> acquisition.Line:
    [found] = [x for x in lines if x.label == label]
    return found


async def test_first_touch_google_ads_last_touch_email_values_per_currency(
    url: str, twilio: fake_twilio.FakeTwilio
) -> None:
    async with shop(url, twilio) as s:
        laptop = s.device()
        await visit(laptop, "?gclid=Cj0-ads-click", referrer="https://www.google.com/")
        await visit(laptop, "?utm_source=News&utm_medium=email&utm_campaign=spring")
        await visit(laptop, "cart")  # a page of the site itself: no new touch
        await buy(laptop, "49.90")
        await buy(laptop, 20, "EUR")
        direct = s.device("198.51.100.9")
        await visit(direct)
        await buy(direct, 10.5)

        report = s.report()
        assert report.total.count == 3 and report.cross_device == 0
        assert report.total.values == {"USD": 60_400_000, "EUR": 20_000_000}
        paid = line(report.by_channel, "paid_search")
        assert (paid.first.count, paid.last.count) == (2, 0)
        assert paid.first.values == {"USD": 49_900_000, "EUR": 20_000_000}  # never added up
        email = line(report.by_channel, "email")
        assert (email.first.count, email.last.count) == (0, 2)
        assert (line(report.by_channel, "direct").first.count) == 1
        google = line(report.by_campaign, "paid_search", "google", "cpc", "(none)")
        news = line(report.by_campaign, "email", "news", "email", "spring")
        assert (google.first.count, google.last.count, news.first.count, news.last.count) == (
            2,
            0,
            0,
            2,
        )
        assert acquisition.money(paid.first.values) == [
            ("EUR", Decimal(20)),
            ("USD", Decimal("49.9")),
        ]
        # The rollups hold the purchases only (page views are no conversion here), by hour.
        with s.engine.connect() as conn:
            rows = list(conn.execute(sa.select(conversion_rollups)).mappings())
        assert sum(r["count"] for r in rows) == 3 and {r["name"] for r in rows} == {"Purchase"}
        assert all(r["hour"].minute == 0 and r["hour"].second == 0 for r in rows)
        # The migration's backfill counts stored conversions exactly as ingest did.
        with s.engine.begin() as conn:
            conn.execute(sa.delete(conversion_rollups))
            conversion_rollups_mod.backfill(conn)
        assert summed(s.engine) == summed_rows(rows)
        # The same conversions as the Reports page counts (one definition of a conversion).
        daily = summary.totals_per_day(s.engine, period=s.period())
        assert sum(day.conversions for day in daily) == report.total.count
        # The source filter: every purchase came from the browser source.
        shop_only = acquisition.acquisition(s.engine, period=s.period("www"))
        crm_only = acquisition.acquisition(s.engine, period=s.period("crm"))
        assert (shop_only.total.count, crm_only.total.count) == (3, 0)


async def test_a_purchase_on_the_second_device_of_a_verified_person_is_cross_device(
    url: str, twilio: fake_twilio.FakeTwilio
) -> None:
    async with shop(url, twilio) as s:
        laptop, phone = s.device("198.51.100.7"), s.device("198.51.100.8")
        await visit(laptop, "?gclid=Cj0-laptop-click")
        user = await s.login(laptop)
        await visit(phone, "?utm_source=news&utm_medium=email&utm_campaign=spring")
        assert await s.login(phone) == user
        await buy(phone, "99.00")
        stranger = s.device("198.51.100.9")
        await visit(stranger, "?utm_source=news&utm_medium=email&utm_campaign=spring")
        await buy(stranger, "5")

        report = s.report()
        assert report.total.count == 2 and report.cross_device == 1
        assert report.cross_device_share == 0.5
        # The phone's purchase: first touch the laptop's ad click, last touch the phone's email.
        assert line(report.by_channel, "paid_search").first.count == 1
        assert line(report.by_channel, "email").last.count == 2
        # A funnel follows the person across devices: laptop and phone enter once, as one.
        landed_then_bought = funnel_spec.parse("x", ["page /", "event Purchase"], 1)
        journey = funnels.compute(s.engine, funnel=landed_then_bought, period=s.period())
        assert [step.people for step in journey.steps] == [2, 2]
        # Google's click was made on the laptop: a browser tag on the phone could not have it.
        google = s.recovered()["google_ads"]
        assert (google.clicked, google.recovered, google.reasons["other_device"]) == (1, 1, 1)


async def test_recovered_per_platform_no_cookie_and_clicks_older_than_seven_days(
    url: str, twilio: fake_twilio.FakeTwilio
) -> None:
    async with shop(url, twilio) as s:
        kept = s.device("198.51.100.7")  # the tag's cookie is there: nothing recovered
        await visit(kept, "?gclid=G-kept")
        await buy(kept, 1, gcl_aw="GCL.1767000000.G-kept")
        bare = s.device("198.51.100.8")  # no pixel cookie at all
        await visit(bare, "?gclid=G-bare&fbclid=F-bare")
        await buy(bare, 1)
        old = s.device("198.51.100.9")  # the cookie is there, the click 10 days old
        await visit(old, "?gclid=G-old")
        with s.engine.begin() as conn:
            clicked = sa.select(click_ids.c.first_seen_at).where(click_ids.c.value == "G-old")
            ten_days_ago = conn.execute(clicked).scalar_one() - timedelta(days=10)
            conn.execute(
                sa.update(click_ids)
                .where(click_ids.c.value == "G-old")
                .values(first_seen_at=ten_days_ago)
            )
        await buy(old, 1, gcl_aw="GCL.1767000000.G-old")
        none = s.device("198.51.100.10")  # no click id: nothing to recover for anyone
        await visit(none)
        await buy(none, 1)

        found = s.recovered()
        google, meta, tiktok = found["google_ads"], found["meta"], found["tiktok"]
        assert (google.clicked, google.recovered) == (3, 2)
        assert google.reasons == {"no_cookie": 1, "aged": 1, "other_device": 0}
        assert (meta.clicked, meta.recovered, meta.reasons["no_cookie"]) == (1, 1, 1)
        assert (tiktok.clicked, tiktok.recovered) == (0, 0) and tiktok.share is None


async def test_the_page_the_csv_and_bad_queries(
    url: str, twilio: fake_twilio.FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(acquisition_ui, "MAX_ROWS", 1)  # the page shows the top row only
    async with shop(url, twilio) as s:
        laptop = s.device()
        await visit(laptop, "?gclid=Cj0-ads-click")
        await visit(laptop, "?utm_source=news&utm_medium=email&utm_campaign=<b>spring</b>")
        await buy(laptop, "49.90")
        admin = s.device("198.51.100.20")
        page = await signed_in_page(admin, "/admin/reports/acquisition?range=7d&tz=Europe/Paris")
        assert 'id="by-channel"' in page and "paid_search" in page and "USD 49.90" in page
        assert "&lt;b&gt;spring&lt;/b&gt;" in page and "<b>spring" not in page  # escaped
        assert "Europe/Paris" in page and 'id="recovered"' in page
        assert "1 more are in the CSV" in page
        reports = await signed_in_page(admin, "/admin/reports")
        assert "/admin/reports/acquisition?" in reports

        csv = await admin.get("/admin/reports/acquisition?range=7d&format=csv")
        assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
        assert "attachment" in csv.headers["content-disposition"]
        lines = csv.text.splitlines()
        assert lines[0].startswith("table,channel,source,medium,campaign,touch,conversions")
        assert "by_channel,paid_search,,,,first,1,USD,49.9" in lines
        assert "by_channel,email,,,,last,1,USD,49.9" in lines

        before = s.report()
        for query in (
            "format=xml",
            "range=forever",
            "tz=Mars/Olympus",
            "range=custom&from=2026-13-01&to=2026-12-01",
            "source=%3Cscript%3E",
        ):
            answer = await admin.get(f"/admin/reports/acquisition?{query}")
            assert answer.status_code == 400, (query, answer.status_code)
        assert s.report() == before
