"""The demo site: its page and the live feed of the caller's own events (sqlite, in-process)."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from typing import Any
from unittest.mock import ANY

import pytest
import sqlalchemy as sa

from firstparty import cli
from firstparty.settings import Settings
from firstparty.store import db
from firstparty.tracker import serve
from tests.conftest import BROWSER_KEY, AppClient, base_config, running_app

DEMO_ORIGIN = "https://t.example.test"


def _settings(sqlite_url: str, **overrides: Any) -> Settings:
    config = base_config(sqlite_url, **overrides)
    config["sources"][0]["origins"].append(DEMO_ORIGIN)
    return Settings.model_validate(config)


async def _client(settings: Settings) -> AsyncIterator[AppClient]:
    async with running_app(settings) as client:
        yield client


@pytest.fixture
async def client(sqlite_url: str) -> AsyncIterator[AppClient]:
    async for c in _client(_settings(sqlite_url)):
        yield c


async def test_page_carries_the_snippet_with_the_key_for_its_origin(client: AppClient) -> None:
    response = await client.http.get("/demo/")
    assert response.status_code == 200
    # The script URL is relative: the Host header is never written into the page.
    snippet = f'<script async src="{serve.bundle().path}" data-key="{BROWSER_KEY}">'
    assert snippet in response.text
    assert "%%" not in response.text
    assert response.headers["cache-control"] == "no-store"


async def test_without_a_source_for_its_origin_the_page_explains_the_setup(
    sqlite_url: str,
) -> None:
    async for c in _client(Settings.model_validate(base_config(sqlite_url))):
        text = (await c.http.get("/demo/")).text
        assert '<section class="setup" >' in text  # shown
        assert "data-key=&quot;WRITE_KEY&quot;" in text
        given = (await c.http.get("/demo/?key=wk_given_key_123")).text
        assert 'data-key="wk_given_key_123"' in given
        hostile = (await c.http.get('/demo/?key="><script>alert(1)</script>')).text
        assert "alert(1)</script>" not in hostile


async def test_demo_redirects_to_its_slash(client: AppClient) -> None:
    response = await client.http.get("/demo", follow_redirects=False)
    assert response.status_code == 308 and response.headers["location"] == "/demo/"
    forged = await client.http.get("/demo?utm_source=x", headers={"Host": "evil.example"})
    assert forged.status_code == 308 and forged.headers["location"] == "/demo/?utm_source=x"


async def test_with_a_public_url_the_snippet_is_absolute_under_it(sqlite_url: str) -> None:
    async with running_app(_settings(sqlite_url, public_url=DEMO_ORIGIN)) as c:
        text = (await c.http.get("/demo/", headers={"Host": "evil.example"})).text
    snippet = f'<script async src="{DEMO_ORIGIN}{serve.bundle().path}" data-key="{BROWSER_KEY}">'
    assert snippet in text and "evil.example" not in text


async def test_feed_shows_only_the_callers_own_events(client: AppClient) -> None:
    headers = {"X-Write-Key": BROWSER_KEY, "Origin": DEMO_ORIGIN}
    url = f"{DEMO_ORIGIN}/demo/?gclid=G-1&utm_source=x"
    page = {"type": "page", "url": url, "context": {"fbp": "fb.1.1.1"}}
    mine = await client.http.post("/v1/events", json=page, headers=headers)
    own_cookie = mine.cookies["fp_id"]
    client.http.cookies.clear()
    other = await client.http.post(
        "/v1/events", json={"type": "track", "name": "Other"}, headers=headers
    )
    assert other.json()["visitor_id"] != mine.json()["visitor_id"]
    client.http.cookies.clear()

    assert (await client.http.get("/demo/events.json")).json() == {
        "visitor_id": None,
        "events": [],
        "click_ids": [],
    }
    own = {"Cookie": f"fp_id={own_cookie}"}
    feed = (await client.http.get("/demo/events.json", headers=own)).json()
    assert feed["visitor_id"] == mine.json()["visitor_id"]
    [event] = feed["events"]
    assert event["event_id"] == mine.json()["event_id"]
    assert event["type"] == "page" and event["url"] == url
    # No ip or user agent; the GA4 session kept server-side (issue 11) is not personal.
    assert event["context"] == {"fbp": "fb.1.1.1", "session_id": ANY, "session_number": "1"}
    assert [(c["kind"], c["value"]) for c in feed["click_ids"]] == [("gclid", "G-1")]


async def test_a_forged_cookie_sees_nothing(client: AppClient) -> None:
    forged = {"Cookie": "fp_id=someone-else.AAAAAAAAAAAAAAAAAAAAAA"}
    feed = (await client.http.get("/demo/events.json", headers=forged)).json()
    assert feed["visitor_id"] is None


async def test_off_when_the_config_says_so(sqlite_url: str) -> None:
    async for c in _client(_settings(sqlite_url, demo=False)):
        assert (await c.http.get("/demo/")).status_code == 404
        assert (await c.http.get("/demo/events.json")).status_code == 404


@pytest.mark.parametrize("engine_kind", ["postgresql", "mysql"], indirect=True)
async def test_off_by_default_on_a_server_database(database_url: str) -> None:
    """Unset, the demo is on with SQLite only; `demo = true` turns it on anywhere."""
    async with running_app(_settings(database_url)) as c:
        assert c.settings.demo is None and not c.settings.demo_on
        assert (await c.http.get("/demo/")).status_code == 404
        assert (await c.http.get("/demo/events.json")).status_code == 404
    async with running_app(_settings(database_url, demo=True)) as c:
        assert (await c.http.get("/demo/")).status_code == 200


async def test_on_by_default_with_sqlite(client: AppClient) -> None:
    assert client.settings.demo is None and client.settings.demo_on
    assert (await client.http.get("/demo/")).status_code == 200


@pytest.mark.parametrize("engine_kind", ["sqlite", "postgresql"], indirect=True)
def test_the_first_run_creates_the_demo_source_and_link_only_when_the_demo_is_on(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings.model_validate({**base_config(database_url), "sources": []})
    args = argparse.Namespace(host="127.0.0.1", port=8000)
    engine = db.create_engine(database_url, poolclass=sa.NullPool)
    try:
        keys = cli._first_run_sources(settings, engine, args)
    finally:
        engine.dispose()
    cli._banner(settings, args, True, keys)
    banner = capsys.readouterr().out
    assert ("demo" in keys) is settings.demo_on is settings.is_sqlite
    assert ("/demo/" in banner) is settings.demo_on
