"""The Audiences page through the real app: rules, the members the last sync recorded (loading
the page counts nobody), the Preview button counting them now with the coverage per platform,
the platform-minimum warning, the Sync button (CSRF) syncing to the strict fakes, the last sync,
the members acknowledged and the size chart; bad posts change nothing. And the page in headless
Chromium (a screenshot)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from firstparty.audiences import service
from firstparty.store import db, migrate
from firstparty.store.models import audience_sizes, audit_log
from tests.audiences.people import lead
from tests.browser import harness
from tests.conftest import BROWSER_KEY, BROWSER_UA, AppClient, running_app, settings_for
from tests.e2e.journey import SITE, Browser
from tests.fakes import meta_audience, tiktok_audience
from tests.web.test_admin_ui import TOKEN, csrf_in, signed_in_page

ARTIFACTS = Path(__file__).parents[1] / "browser" / "artifacts"


def config(
    meta: meta_audience.FakeMetaAudience, tiktok: tiktok_audience.FakeTikTokAudience
) -> dict[str, Any]:
    return {
        "destinations": [
            {
                "name": "meta_leads",
                "type": "meta_custom_audience",
                "audience_id": meta_audience.AUDIENCE_ID,
                "access_token": meta_audience.ACCESS_TOKEN,
                "api_base": meta.api_base,
            },
            {
                "name": "tiktok_leads",
                "type": "tiktok_audience",
                "advertiser_id": tiktok_audience.ADVERTISER_ID,
                "audience_id": tiktok_audience.AUDIENCE_ID,
                "access_token": tiktok_audience.ACCESS_TOKEN,
                "api_base": tiktok.api_base,
            },
        ],
        "audiences": [
            {
                "name": "leads",
                "description": "asked for a quote",
                "rules": [
                    {"did": "Lead", "within_days": 30, "where": ["value >= 100"]},
                    {"did_not": "Purchase", "within_days": 90},
                ],
                "destinations": ["meta_leads", "tiktok_leads"],
                "every_minutes": 0,
            },
            {"name": "empty", "rules": [{"verified_phone": True}], "every_minutes": 0},
        ],
    }


@pytest.fixture
async def app(sqlite_url: str) -> AsyncIterator[tuple[AppClient, Any, Any]]:
    with meta_audience.FakeMetaAudience() as meta, tiktok_audience.FakeTikTokAudience() as tiktok:
        async with running_app(settings_for(sqlite_url, **config(meta, tiktok))) as client:
            yield client, meta, tiktok


async def leads(app: AppClient, count: int) -> None:
    for n in range(count):
        async with Browser(app, f"198.51.100.{20 + n}") as browser:
            await browser.send(lead(150, f"lead{n}@example.com"))
    async with Browser(app, "198.51.100.99") as small:
        await small.send(lead(20, "small@example.com"))  # value < 100: not a member


async def test_the_page_shows_each_audience_and_the_button_syncs(
    app: tuple[AppClient, meta_audience.FakeMetaAudience, tiktok_audience.FakeTikTokAudience],
) -> None:
    client, meta, tiktok = app
    await leads(client, 3)
    page = await signed_in_page(client.http, "/admin/audiences")
    assert 'href="/admin/audiences" class="here">Audiences</a>' in page
    assert "did Lead where value &gt;= 100 in the last 30 days" in page
    assert "did not do Purchase in the last 90 days" in page
    assert page.count("Not counted yet") == 2  # loading the page counts nobody
    assert page.count("never synced") == 2
    assert "No size recorded yet" in page
    assert "No destinations: preview and export only" in page  # the `empty` audience

    previewed = await client.http.get("/admin/audiences", params={"preview": "leads"})
    assert '<strong class="size">3</strong> people match' in previewed.text
    assert "a preview: nothing recorded, nothing sent" in previewed.text
    assert '<span class="mono">em</span> 3' in previewed.text  # Meta and TikTok match all three
    assert "needs about 100 matched people" in previewed.text
    assert "needs about 1,000 matched" in previewed.text
    assert "Not counted yet" in previewed.text  # the `empty` audience was not previewed
    assert meta.requests == [] and client.rows(audience_sizes) == []

    synced = await client.http.post(
        "/admin/audiences/sync", data={"csrf": csrf_in(page), "name": "leads"}
    )
    assert synced.status_code == 200
    assert "meta_leads: 3 added, 0 removed, 0 not acknowledged" in synced.text
    assert "tiktok_leads: 3 added, 0 removed" in synced.text
    assert meta.size() == 3 and tiktok.size() == 3
    assert '<title id="size0-title">Size of leads over time</title>' in synced.text
    assert "(button)" in synced.text
    assert synced.text.count("never synced") == 0
    assert synced.text.count('<td class="num held">3</td>') == 2  # acknowledged by both
    with client.engine.connect() as conn:
        logged = conn.execute(sa.select(audit_log).where(audit_log.c.action == "audience_sync"))
        [row] = logged.mappings().all()
    assert row["subject"] == "leads"
    assert row["detail"]["meta_leads"] == {"adds": 3, "removes": 0, "errors": 0}


async def test_the_page_shows_the_last_sync_and_counts_only_on_preview(
    app: tuple[AppClient, meta_audience.FakeMetaAudience, tiktok_audience.FakeTikTokAudience],
) -> None:
    client, meta, _ = app
    await leads(client, 3)
    page = await signed_in_page(client.http, "/admin/audiences")
    synced = await client.http.post(
        "/admin/audiences/sync", data={"csrf": csrf_in(page), "name": "leads"}
    )
    assert synced.status_code == 200 and meta.size() == 3
    await leads(client, 2)  # two more people match now: five

    stored = (await client.http.get("/admin/audiences")).text
    assert '<strong class="size">3</strong> people match' in stored
    assert "as of the last sync" in stored
    assert "needs about 100 matched people" in stored  # judged on the last run's 3
    assert '<span class="mono">em</span>' not in stored  # by identifier: on a preview only
    assert stored.count('<td class="num held">3</td>') == 2

    now = (await client.http.get("/admin/audiences", params={"preview": "leads"})).text
    assert '<strong class="size">5</strong> people match' in now
    assert '<span class="mono">em</span> 5' in now
    assert now.count('<td class="num held">3</td>') == 2  # nothing was sent
    assert meta.size() == 3 and len(client.rows(audience_sizes)) == 1

    unknown = await client.http.get("/admin/audiences", params={"preview": "nope"})
    assert unknown.status_code == 404 and "no audience named &#39;nope&#39;" in unknown.text


async def test_bad_posts_change_nothing(
    app: tuple[AppClient, meta_audience.FakeMetaAudience, tiktok_audience.FakeTikTokAudience],
) -> None:
    client, meta, _ = app
    await leads(client, 1)
    page = await signed_in_page(client.http, "/admin/audiences")
    forged = await client.http.post("/admin/audiences/sync", data={"csrf": "x", "name": "leads"})
    assert forged.status_code == 403
    unknown = await client.http.post(
        "/admin/audiences/sync", data={"csrf": csrf_in(page), "name": "nope"}
    )
    assert unknown.status_code == 404 and "no audience named &#39;nope&#39;" in unknown.text
    assert meta.requests == [] and client.rows(audience_sizes) == []
    anonymous = httpx.AsyncClient(transport=client.http._transport, base_url=client.http.base_url)
    async with anonymous:
        assert (await anonymous.get("/admin/audiences")).status_code == 303


async def test_a_sync_running_elsewhere_is_a_409_notice(
    app: tuple[AppClient, meta_audience.FakeMetaAudience, tiktok_audience.FakeTikTokAudience],
) -> None:
    client, meta, _ = app
    page = await signed_in_page(client.http, "/admin/audiences")
    leads = service.find(client.settings, "leads")
    now = datetime.now(UTC)
    assert service.take(client.engine, leads, holder="other-process", now=now, due_only=False)
    busy = await client.http.post(
        "/admin/audiences/sync", data={"csrf": csrf_in(page), "name": "leads"}
    )
    assert busy.status_code == 409 and 'id="sync-error"' in busy.text
    assert "being synced by another process" in busy.text
    assert meta.requests == []


# ---------------------------------------------------------------- in Chromium


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, meta_audience.FakeMetaAudience]]:
    from firstparty.app import create_app

    url = f"sqlite:///{tmp_path / 'firstparty.db'}"
    engine = db.create_engine(url, poolclass=sa.NullPool)
    migrate.upgrade(engine)
    now = datetime.now(UTC)
    with engine.begin() as conn:  # a week of hourly history before today's syncs
        conn.execute(
            sa.insert(audience_sizes),
            [
                {"audience": "leads", "at": now - timedelta(hours=h), "size": s, "consented": c}
                for h, s, c in ((150, 1, 1), (120, 2, 1), (96, 2, 2), (72, 3, 2), (48, 4, 3))
            ],
        )
    engine.dispose()
    with meta_audience.FakeMetaAudience() as meta, tiktok_audience.FakeTikTokAudience() as tiktok:
        settings = settings_for(url, **config(meta, tiktok))
        server = harness.ServerThread(create_app(settings), harness.certificate(tmp_path))
        with server:
            base = f"https://127.0.0.1:{server.port}"
            headers = {"X-Write-Key": BROWSER_KEY, "Origin": SITE, "User-Agent": BROWSER_UA}
            for n in range(4):  # four browsers, each with its own visitor cookie
                with httpx.Client(base_url=base, verify=False, headers=headers) as http:
                    event = lead(150, f"lead{n}@example.com")
                    assert http.post("/v1/events", json=event).status_code == 202
            yield base, meta


def test_the_audiences_page_in_chromium(
    served: tuple[str, meta_audience.FakeMetaAudience],
) -> None:
    base, meta = served
    ARTIFACTS.mkdir(exist_ok=True)
    with harness.admin_page(base, TOKEN, height=900) as page:
        page.click("nav >> text=Audiences")
        page.wait_for_url(f"{base}/admin/audiences")
        page.click("#audience-leads button[type=submit]")
        page.locator("#sync-done").wait_for()
        assert "meta_leads: 4 added" in page.locator("#sync-done").inner_text()
        bars = page.locator("#size-leads svg rect:has(title)")
        assert bars.count() == 12  # six runs, matching and consented
        assert "4 people matching" not in bars.last.inner_html()
        assert "4 consented" in bars.last.inner_html()
        row = page.locator('#audience-leads tr[data-destination="tiktok_leads"]')
        warning = page.locator('#audience-leads tr[data-warning-for="tiktok_leads"]')
        assert "needs about 1,000 matched people" in warning.inner_text()
        assert "needs about" not in row.inner_text()  # said once, on its own line
        page.screenshot(path=str(ARTIFACTS / "admin-audiences.png"), full_page=True)
        page.click("#audience-leads form.preview button")
        page.wait_for_url(f"{base}/admin/audiences?preview=leads")
        counted = page.locator("#audience-leads .counted").inner_text()
        assert "a preview: nothing recorded, nothing sent" in counted
        assert "em 4" in row.inner_text()
    assert meta.size() == 4
