"""Issue 13: a destination added, changed, disabled and deleted in the admin UI is used by every
server and worker without a restart. Two apps on one database play two processes: the operator's
(worker off) and another server whose embedded worker delivers to the strict Meta fake."""

from __future__ import annotations

import html
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from firstparty.delivery import queue, worker
from firstparty.destinations.book import DestinationBook
from firstparty.store import db, migrate
from firstparty.store.models import deliveries, events
from firstparty.store.models import destinations as table
from tests.browser import harness
from tests.conftest import SERVER_KEY, AppClient, running_app, settings_for
from tests.delivery.outbox import eventually
from tests.fakes import meta as fake_meta
from tests.web.test_admin_ui import TOKEN, browser, csrf_in, signed_in_page

ARTIFACTS = Path(__file__).parents[1] / "browser" / "artifacts"
FAST = {"backoff_base_seconds": 0.01, "backoff_max_seconds": 0.05, "sweep_interval_seconds": 0.1}
CONFIG_HOOK = {"name": "hook", "type": "webhook", "url": "http://127.0.0.1:9/", "secret": "s" * 16}


@pytest.fixture
def meta() -> Iterator[fake_meta.FakeMeta]:
    with fake_meta.FakeMeta() as server:
        yield server


def form(meta: fake_meta.FakeMeta, csrf: str, **changes: str) -> dict[str, str]:
    fields = {
        "csrf": csrf,
        "type": "meta_capi",
        "creating": "1",
        "name": "meta-ui",
        "api_base": meta.api_base,
        "pixel_id": fake_meta.PIXEL_ID,
        "access_token": fake_meta.ACCESS_TOKEN,
        "events": "Lead = Lead\npage = PageView",
        "timeout_seconds": "5",
    }
    return {**fields, **changes}


async def lead(app: AppClient, event_id: str) -> None:
    body = {"type": "track", "name": "Lead", "event_id": event_id, "user": {"email": "a@b.test"}}
    r = await app.http.post("/v1/events", headers={"X-Write-Key": SERVER_KEY}, json=body)
    assert r.status_code == 202


def routed_to(app: AppClient, event_id: str) -> list[str]:
    with app.engine.connect() as conn:
        query = (
            sa.select(deliveries.c.destination)
            .join(events, events.c.id == deliveries.c.event_pk)
            .where(events.c.event_id == event_id)
        )
        return [r.destination for r in conn.execute(query)]


@pytest.fixture
async def apps(database_url: str) -> AsyncIterator[tuple[AppClient, AppClient]]:
    settings = settings_for(database_url, destinations=[CONFIG_HOOK], delivery=FAST)
    async with running_app(settings) as operator, running_app(settings, run_worker=True) as other:
        yield operator, other


async def test_a_destination_added_in_the_ui_is_used_without_a_restart(
    apps: tuple[AppClient, AppClient], meta: fake_meta.FakeMeta
) -> None:
    operator, other = apps
    async with browser(operator) as http:
        page = await signed_in_page(http, "/admin/destinations")
        assert "from the config file" in page and 'action="/admin/destinations/new"' in page
        added_form = await http.get("/admin/destinations/new", params={"type": "meta_capi"})
        assert added_form.status_code == 200 and 'type="password"' in added_form.text
        csrf = csrf_in(page)
        added = await http.post("/admin/destinations/save", data=form(meta, csrf))
        assert added.status_code == 200, added.text
        assert "Added meta-ui" in added.text and fake_meta.ACCESS_TOKEN not in added.text

        # The other server (its own book, its embedded worker) follows the table.
        await eventually(lambda: "meta-ui" in other.app.state.runtime.adapters)
        await lead(other, "after-add")
        assert sorted(routed_to(other, "after-add")) == ["hook", "meta-ui"]
        await eventually(lambda: len(meta.events) == 1)
        assert meta.events[0]["event_id"] == "after-add"

        edit = await http.get("/admin/destinations/edit", params={"name": "meta-ui"})
        assert "set (kept)" in edit.text and fake_meta.ACCESS_TOKEN not in edit.text
        assert "Lead = Lead" in edit.text

        off = await http.post(
            "/admin/destinations/state", data={"csrf": csrf, "name": "meta-ui", "action": "disable"}
        )
        assert "meta-ui is disabled" in off.text
        await eventually(lambda: "meta-ui" not in other.app.state.runtime.adapters)
        await lead(other, "after-disable")
        assert routed_to(other, "after-disable") == ["hook"]

        ask = await http.post(
            "/admin/destinations/state", data={"csrf": csrf, "name": "meta-ui", "action": "delete"}
        )
        assert "Delete <strong>meta-ui</strong>?" in ask.text and operator.rows(table)
        gone = await http.post(
            "/admin/destinations/state",
            data={"csrf": csrf, "name": "meta-ui", "action": "delete", "confirmed": "yes"},
        )
        assert "Deleted meta-ui" in gone.text and operator.rows(table) == []
    assert len(meta.events) == 1


async def test_bad_input_is_refused_with_every_problem_and_no_row(
    apps: tuple[AppClient, AppClient], meta: fake_meta.FakeMeta
) -> None:
    operator, _ = apps
    async with browser(operator) as http:
        csrf = csrf_in(await signed_in_page(http, "/admin/destinations"))
        bad = form(meta, csrf, pixel_id="", timeout_seconds="-3", events="Lead Lead")
        refused = await http.post("/admin/destinations/save", data=bad)
        assert refused.status_code == 422
        assert "events: line 1: write incoming = platform" in html.unescape(refused.text)
        invalid = form(meta, csrf, pixel_id="", timeout_seconds="-3")
        refused = await http.post("/admin/destinations/save", data=invalid)
        assert refused.status_code == 422
        text = html.unescape(refused.text)
        assert "pixel_id: Field required" in text
        assert "timeout_seconds: Input should be greater than 0" in text
        assert fake_meta.ACCESS_TOKEN not in refused.text  # a typed secret is not echoed back
        clash = await http.post("/admin/destinations/save", data=form(meta, csrf, name="hook"))
        assert clash.status_code == 409 and "config file" in clash.text
        forged = await http.post("/admin/destinations/save", data=form(meta, ""))
        assert forged.status_code == 403
    assert operator.rows(table) == []


async def test_the_test_event_button_works_for_a_stored_destination(
    apps: tuple[AppClient, AppClient], meta: fake_meta.FakeMeta
) -> None:
    operator, _ = apps
    async with browser(operator) as http:
        csrf = csrf_in(await signed_in_page(http, "/admin/destinations"))
        await http.post("/admin/destinations/save", data=form(meta, csrf))
        sent = await http.post(
            "/admin/destinations/test",
            data={"csrf": csrf, "name": "meta-ui", "test_event_code": "TEST12"},
        )
        assert sent.status_code == 200
        assert "events_received" in html.unescape(sent.text)
        assert fake_meta.ACCESS_TOKEN not in sent.text
    assert meta.test_event_codes == ["TEST12"]


async def test_a_separate_worker_follows_the_table(
    apps: tuple[AppClient, AppClient], meta: fake_meta.FakeMeta
) -> None:
    """`firstparty worker`'s Worker: it looks at the book before a round."""
    operator, _ = apps
    settings = operator.settings
    book = DestinationBook(settings=settings, engine=operator.engine)
    book.reload()
    alone = worker.Worker(
        settings=settings,
        engine=operator.engine,
        adapters={},
        queue=queue.make_queue(settings),
        book=book,
    )
    async with browser(operator) as http:
        csrf = csrf_in(await signed_in_page(http, "/admin/destinations"))
        await lead(operator, "before")  # routed to the config file's hook only
        await http.post("/admin/destinations/save", data=form(meta, csrf))
        await lead(operator, "after")
    assert "meta-ui" not in alone.adapters  # not looked yet
    await eventually(lambda: book.reload_if_due(0.0) or "meta-ui" in book.adapters)
    try:
        await alone.run_once()
    finally:
        await alone.stop()
    assert [e["event_id"] for e in meta.events] == ["after"]


# ---------------------------------------------------------------- headless Chromium


@pytest.fixture
def served(tmp_path: Path, meta: fake_meta.FakeMeta) -> Iterator[str]:
    from firstparty.app import create_app

    url = f"sqlite:///{tmp_path / 'firstparty.db'}"
    engine = db.create_engine(url, poolclass=sa.NullPool)
    migrate.upgrade(engine)
    engine.dispose()
    settings = settings_for(url, destinations=[CONFIG_HOOK], delivery=FAST)
    with harness.ServerThread(create_app(settings), harness.certificate(tmp_path)) as server:
        yield f"https://127.0.0.1:{server.port}"


def test_screenshots_of_adding_a_destination(served: str, meta: fake_meta.FakeMeta) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    with harness.admin_page(served, TOKEN) as page:
        page.goto(f"{served}/admin/destinations")
        page.select_option("#add select[name=type]", "meta_capi")
        page.click("#add button")
        page.fill("#f-name", "meta-ui")
        page.fill("#f-api_base", meta.api_base)
        page.fill("#f-pixel_id", fake_meta.PIXEL_ID)
        page.fill("#f-access_token", fake_meta.ACCESS_TOKEN)
        page.fill("#f-events", "Lead = Lead\npage = PageView")
        page.screenshot(path=str(ARTIFACTS / "admin-destination-add.png"), full_page=True)
        page.click("button.save")
        assert "Added meta-ui" in page.inner_text("#outcome")
        row = page.locator("#destinations tr", has_text="meta-ui")
        assert "ready" in row.inner_text() and "database" in row.inner_text()
        page.fill("#destinations tr:has-text('meta-ui') input[name=test_event_code]", "TEST5")
        page.click("#destinations tr:has-text('meta-ui') button.test")
        assert "events_received" in page.inner_text(".exchange-answer")
        assert fake_meta.ACCESS_TOKEN not in page.content()
        page.screenshot(path=str(ARTIFACTS / "admin-destinations-stored.png"), full_page=True)
    assert meta.test_event_codes == ["TEST5"]


async def test_an_unset_env_secret_is_reported_not_sent(
    apps: tuple[AppClient, AppClient], meta: fake_meta.FakeMeta
) -> None:
    operator, other = apps
    async with browser(operator) as http:
        csrf = csrf_in(await signed_in_page(http, "/admin/destinations"))
        referenced = form(meta, csrf, access_token="env:FP_UNSET_META_TOKEN")
        added = await http.post("/admin/destinations/save", data=referenced)
        assert "cannot send: environment variable FP_UNSET_META_TOKEN not set" in added.text
        edit = await http.get("/admin/destinations/edit", params={"name": "meta-ui"})
        assert 'value="env:FP_UNSET_META_TOKEN"' in edit.text
    await eventually(lambda: "meta-ui" in other.app.state.runtime.adapters)
    ready = (await other.http.get("/readyz")).json()
    assert ready["misconfigured"] == {"meta-ui": "environment variable FP_UNSET_META_TOKEN not set"}
    await lead(other, "waits")
    assert sorted(routed_to(other, "waits")) == ["hook", "meta-ui"]  # routed; it waits, pending
    await other.app.state.runtime.notifier.notify()
    assert meta.events == []  # its worker does not send with an unset secret
