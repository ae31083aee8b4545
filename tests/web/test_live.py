"""Issue 13: the live debugger. Its reads on every engine, and the page in headless Chromium:
an event appears as it arrives, with its warning, then its delivery and Meta's answer (the
strict fake of tests/fakes/meta.py behind a real worker)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from firstparty.reports import live
from firstparty.store import db, migrate
from tests.browser import harness
from tests.conftest import BROWSER_KEY, SERVER_KEY, AppClient, settings_for
from tests.fakes import meta as fake_meta

TOKEN = "admin-token-for-tests"
SITE = "https://www.example.test"
ARTIFACTS = Path(__file__).parents[1] / "browser" / "artifacts"
FAST = {"backoff_base_seconds": 0.01, "backoff_max_seconds": 0.05, "sweep_interval_seconds": 0.1}


async def test_a_watch_sees_each_event_once_and_follows_its_deliveries(
    app_client: AppClient,
) -> None:
    watch = live.Watch.starting(datetime.now(UTC))
    assert live.poll(app_client.engine, watch, datetime.now(UTC)) == ([], [])
    body = {"type": "track", "name": "Lead", "user": {"phone": "not a phone"}}
    r = await app_client.http.post("/v1/events", headers={"X-Write-Key": SERVER_KEY}, json=body)
    assert r.status_code == 202
    events, _ = live.poll(app_client.engine, watch, datetime.now(UTC))
    assert [e["name"] for e in events] == ["Lead"]
    assert events[0]["warnings"][0]["field"] == "user.phone"
    again, _ = live.poll(app_client.engine, watch, datetime.now(UTC))
    assert again == []  # read again through the overlap, shown once
    later = datetime.now(UTC) + live.FOLLOW + timedelta(seconds=1)
    live.poll(app_client.engine, watch, later)
    assert watch.shown == {}  # no longer followed


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, fake_meta.FakeMeta]]:
    from firstparty.app import create_app

    url = f"sqlite:///{tmp_path / 'firstparty.db'}"
    engine = db.create_engine(url, poolclass=sa.NullPool)
    migrate.upgrade(engine)
    engine.dispose()
    with fake_meta.FakeMeta() as meta:
        destination = {
            "name": "meta",
            "type": "meta_capi",
            "pixel_id": fake_meta.PIXEL_ID,
            "access_token": fake_meta.ACCESS_TOKEN,
            "api_base": meta.api_base,
        }
        settings = settings_for(url, destinations=[destination], delivery=FAST)
        server = harness.ServerThread(
            create_app(settings, run_worker=True), harness.certificate(tmp_path)
        )
        with server:
            yield f"https://127.0.0.1:{server.port}", meta


def test_the_live_page_shows_events_and_answers_as_they_come(
    served: tuple[str, fake_meta.FakeMeta],
) -> None:
    base, meta = served
    ARTIFACTS.mkdir(exist_ok=True)
    with harness.admin_page(base, TOKEN, height=600) as page:
        page.goto(f"{base}/admin/live")
        # A locator wait, not wait_for_function: the page's CSP refuses the eval its polling uses.
        page.locator("#live-state", has_text="following").wait_for()
        assert page.locator("#live tbody tr").count() == 0

        event = {
            "type": "track",
            "name": "Lead",
            "event_id": "live-1",
            "url": f"{SITE}/apply",
            "user": {"email": "a@example.com", "phone": "12"},
        }
        headers = {"X-Write-Key": BROWSER_KEY, "Origin": SITE, "User-Agent": "Mozilla/5.0"}
        with httpx.Client(base_url=base, verify=False) as http:
            assert http.post("/v1/events", json=event, headers=headers).status_code == 202
        row = page.locator("#live tbody tr").first
        row.locator("text=Lead").wait_for()
        assert "user.phone" in row.inner_text()
        delivered = row.locator(".deliveries .status-delivered")
        delivered.wait_for()
        assert "meta: delivered (try 1) — 200" in delivered.inner_text()
        assert '"events_received": 1' in delivered.inner_text()
        page.screenshot(path=str(ARTIFACTS / "admin-live.png"), full_page=True)
    assert len(meta.events) == 1


# Issue 15: filters (source, name, type) on the page and the stream, and pause on demand.


async def test_filters_narrow_the_watch_and_the_page(sqlite_client: AppClient) -> None:
    from tests.web.test_admin_ui import server_send, signed_in_page

    await server_send(sqlite_client, {"type": "track", "name": "Lead"})
    await server_send(sqlite_client, {"type": "track", "name": "Signup"})
    await server_send(sqlite_client, {"type": "page"})  # stored with the name "page"
    now = datetime.now(UTC)
    by_name = live.Watch.starting(now, filters=live.Filters(name="Lead"))
    assert [e["name"] for e in live.poll(sqlite_client.engine, by_name, now)[0]] == ["Lead"]
    by_type = live.Watch.starting(now, filters=live.Filters(type="page"))
    assert [e["name"] for e in live.poll(sqlite_client.engine, by_type, now)[0]] == ["page"]
    elsewhere = live.Watch.starting(now, filters=live.Filters(source="no-such-source"))
    assert live.poll(sqlite_client.engine, elsewhere, now)[0] == []

    everything = await signed_in_page(sqlite_client.http, "/admin/live")
    assert everything.count('href="/admin/events/') == 3
    leads = await signed_in_page(sqlite_client.http, "/admin/live?name=Lead&type=track")
    assert leads.count('href="/admin/events/') == 1 and ">Lead<" in leads
    pages = await signed_in_page(sqlite_client.http, "/admin/live?type=page")
    assert pages.count('href="/admin/events/') == 1 and ">Lead<" not in pages
    assert 'name="name" value="Lead"' in leads  # the form keeps the filter
    assert "<option selected>track</option>" in leads


@pytest.mark.parametrize(
    "query", ["type=bogus", "name=" + "x" * 300, "source=a%00b", "type=track&type=nope"]
)
async def test_a_bad_filter_is_a_422_on_page_and_stream(
    sqlite_client: AppClient, query: str
) -> None:
    from tests.web.test_admin_ui import signed_in_page

    await signed_in_page(sqlite_client.http, "/admin/live")  # signs in
    for path in ("/admin/live", "/admin/live/stream"):
        r = await sqlite_client.http.get(f"{path}?{query}")
        assert r.status_code == 422, (path, r.status_code)


def test_the_live_page_filters_and_pauses(served: tuple[str, fake_meta.FakeMeta]) -> None:
    base, _ = served
    ARTIFACTS.mkdir(exist_ok=True)
    headers = {"X-Write-Key": BROWSER_KEY, "Origin": SITE, "User-Agent": "Mozilla/5.0"}

    def send(http: httpx.Client, name: str) -> None:
        event = {"type": "track", "name": name, "url": f"{SITE}/p"}
        assert http.post("/v1/events", json=event, headers=headers).status_code == 202

    rows = "#live tbody tr"
    with (
        harness.admin_page(base, TOKEN, height=600) as page,
        httpx.Client(base_url=base, verify=False) as http,
    ):
        page.goto(f"{base}/admin/live?name=Lead")
        # A locator wait, not wait_for_function: the page's CSP refuses the eval its polling uses.
        page.locator("#live-state", has_text="following").wait_for()
        assert page.input_value("input[name=name]") == "Lead"
        send(http, "Other")  # not followed: the stream carries the page's filter
        send(http, "Lead")
        page.locator(rows).first.locator("text=Lead").wait_for()
        assert page.locator(rows).count() == 1
        assert "Other" not in page.inner_text("#live")

        page.click("#live-pause")
        assert page.inner_text("#live-pause") == "Resume"
        send(http, "Lead")
        send(http, "Lead")
        page.locator("#live-held", has_text="2 new events").wait_for()
        assert page.locator(rows).count() == 1  # counted, not shown
        page.screenshot(path=str(ARTIFACTS / "admin-live-paused.png"), full_page=True)

        page.click("#live-pause")
        page.locator(rows).nth(2).wait_for()  # (waits with locators: the CSP forbids eval)
        assert page.locator(rows).count() == 3
        assert page.inner_text("#live-held") == ""
        assert page.inner_text("#live-pause") == "Pause"
