"""Issue 13: operators manage keys and send test events from the admin UI, with the rules and
messages of the CLI. Through the real app; the platform is the strict Meta fake."""

from __future__ import annotations

import html
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from firstparty.collect import sources
from firstparty.store import db, migrate
from tests.browser import harness
from tests.conftest import AppClient, running_app, settings_for
from tests.fakes import meta as fake_meta
from tests.web.test_admin_ui import TOKEN, browser, csrf_in, signed_in_page

ARTIFACTS = Path(__file__).parents[1] / "browser" / "artifacts"


def meta_destination(meta: fake_meta.FakeMeta) -> dict[str, str]:
    return {
        "name": "meta",
        "type": "meta_capi",
        "pixel_id": fake_meta.PIXEL_ID,
        "access_token": fake_meta.ACCESS_TOKEN,
        "api_base": meta.api_base,
    }


@pytest.fixture
def meta() -> Iterator[fake_meta.FakeMeta]:
    with fake_meta.FakeMeta() as server:
        yield server


@pytest.fixture
async def app(database_url: str, meta: fake_meta.FakeMeta) -> AsyncIterator[AppClient]:
    settings = settings_for(database_url, destinations=[meta_destination(meta)])
    async with running_app(settings) as client:
        yield client


async def status_with(app: AppClient, key: str) -> int:
    r = await app.http.post("/v1/events", headers={"X-Write-Key": key}, json={"type": "nope"})
    return int(r.status_code)


async def test_operators_rotate_disable_and_delete_keys(app: AppClient) -> None:
    secret = app.settings.secret_key.get_secret_value()
    old = sources.create(app.engine, secret, name="shop", kind="server", origins=[])
    async with browser(app) as http:
        page = await signed_in_page(http, "/admin/sources")
        assert "in the config file" in page and old[:7] in page and old not in page
        csrf = csrf_in(page)

        rotated = await http.post(
            "/admin/sources", data={"csrf": csrf, "name": "shop", "action": "rotate"}
        )
        assert rotated.status_code == 200
        new = html.unescape(rotated.text.split('<pre id="new-key">')[1].split("</pre>")[0])
        assert new.startswith("sk_") and new != old
        app.app.state.collector.sources.reload()  # what the server does every 2 s
        assert await status_with(app, old) == 401 and await status_with(app, new) == 422

        off = await http.post(
            "/admin/sources", data={"csrf": csrf, "name": "shop", "action": "disable"}
        )
        assert "shop is disabled" in off.text
        app.app.state.collector.sources.reload()
        assert await status_with(app, new) == 401

        refused = await http.post(
            "/admin/sources", data={"csrf": csrf, "name": "www", "action": "rotate"}
        )
        assert refused.status_code == 409 and "defined in the config file" in refused.text
        forged = await http.post("/admin/sources", data={"name": "shop", "action": "delete"})
        assert forged.status_code == 403
        gone = await http.post(
            "/admin/sources", data={"csrf": csrf, "name": "shop", "action": "delete"}
        )
        assert "Deleted shop" in gone.text


async def test_the_test_event_button_shows_the_exchange(
    app: AppClient, meta: fake_meta.FakeMeta
) -> None:
    async with browser(app) as http:
        page = await signed_in_page(http, "/admin/destinations")
        csrf = csrf_in(page)
        no_code = await http.post("/admin/destinations/test", data={"csrf": csrf, "name": "meta"})
        assert no_code.status_code == 409 and "--test-event-code" in no_code.text
        assert meta.requests == []
        sent = await http.post(
            "/admin/destinations/test",
            data={"csrf": csrf, "name": "meta", "test_event_code": "TEST77"},
        )
        assert sent.status_code == 200
        text = html.unescape(sent.text)
        assert "sent in test_event_code=TEST77" in text and "events_received" in text
        assert '"test_event_code": "TEST77"' in text
        assert fake_meta.ACCESS_TOKEN not in text
    assert meta.test_event_codes == ["TEST77"]


@pytest.fixture
def served(tmp_path: Path, meta: fake_meta.FakeMeta) -> Iterator[str]:
    from firstparty.app import create_app

    url = f"sqlite:///{tmp_path / 'firstparty.db'}"
    engine = db.create_engine(url, poolclass=sa.NullPool)
    migrate.upgrade(engine)
    settings = settings_for(url, destinations=[meta_destination(meta)])
    sources.create(
        engine, settings.secret_key.get_secret_value(), name="shop", kind="server", origins=[]
    )
    engine.dispose()
    with harness.ServerThread(create_app(settings), harness.certificate(tmp_path)) as server:
        yield f"https://127.0.0.1:{server.port}"


def test_screenshots_of_sources_and_a_test_event(served: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    with harness.admin_page(served, TOKEN) as page:
        page.goto(f"{served}/admin/sources")
        page.click("button.rotate")
        assert page.inner_text("#new-key").startswith("sk_")
        page.screenshot(path=str(ARTIFACTS / "admin-sources.png"), full_page=True)
        page.goto(f"{served}/admin/destinations")
        page.fill("input[name=test_event_code]", "TEST77")
        page.click("button.test")
        assert "test" in page.inner_text("#outcome")
        assert "events_received" in page.inner_text(".exchange-answer")
        page.screenshot(path=str(ARTIFACTS / "admin-destinations.png"), full_page=True)
