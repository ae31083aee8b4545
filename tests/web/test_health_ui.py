"""The failures page says beforehand what a replay would skip, and the replay does exactly that;
the delivery health page and a failed delivery with its replay button in headless Chromium."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from firstparty.delivery import verdicts
from firstparty.destinations import registry
from firstparty.store import db, migrate
from firstparty.store.models import deliveries, events
from tests import factories
from tests.browser import harness
from tests.conftest import running_app, settings_for
from tests.delivery.outbox import add_events, delivery_rows, fake_destination, make_worker
from tests.delivery.receiver import Receiver
from tests.delivery.test_worker import FAST, settings_with
from tests.fakes.meta import FakeMeta
from tests.web.test_admin_ui import TOKEN, csrf_in, receiver, signed_in_page

__all__ = ["receiver"]
ARTIFACTS = Path(__file__).parents[1] / "browser" / "artifacts"


def _age(engine: sa.Engine, pks: list[str], days: float) -> None:
    """These events (and their outbox rows) happened `days` ago: time has passed since."""
    when = datetime.now(UTC) - timedelta(days=days)
    with engine.begin() as conn:
        conn.execute(sa.update(events).where(events.c.id.in_(pks)).values(occurred_at=when))
        conn.execute(
            sa.update(deliveries).where(deliveries.c.event_pk.in_(pks)).values(occurred_at=when)
        )


async def test_the_preview_says_what_the_replay_skips_and_the_replay_does_it(
    sqlite_url: str, receiver: Receiver
) -> None:
    limit = fake_destination(receiver.url, max_event_age_days=7)
    settings = settings_with(sqlite_url, limit)
    engine = db.create_engine(sqlite_url)
    fresh = add_events(engine, ["fake"], 2)
    old = add_events(engine, ["fake"], 1)
    receiver.fail(1, 400)
    work = make_worker(settings, engine)
    await work.drain()
    await work.stop()
    assert {r.status for r in delivery_rows(engine)} == {"failed"}
    _age(engine, old, 8)  # a week later, the third is past the platform's 7 days
    _age(engine, fresh, 2)
    ids = {r.event_pk: r.id for r in delivery_rows(engine)}

    async with running_app(settings_for(sqlite_url, destinations=[limit], delivery=FAST)) as app:
        page = await signed_in_page(app.http, "/admin/failures")
        preview = re.search(
            r'<div class="preview muted" data-destination="fake">(.*?)</div>', page, re.S
        )
        assert preview is not None
        said = " ".join(preview.group(1).split())
        assert '<strong class="requeue">2</strong>' in said
        assert '<strong class="skip">1</strong>' in said
        assert "1 \u00d7 event is older than 7 days; fake accepts up to 7 days" in said
        old_row = page.split(f'data-delivery="{ids[old[0]]}"')[1].split("</tr>")[0]
        assert "Would be skipped: event is older than 7 days" in old_row
        assert 'class="status status-failed passed">passed<' in old_row
        assert "replay-one" not in old_row
        fresh_row = page.split(f'<tr data-delivery="{ids[fresh[0]]}"')[1].split("</tr>")[0]
        until = (datetime.now(UTC) - timedelta(days=2) + timedelta(days=7)).date().isoformat()
        assert until in fresh_row and 'class="replay-one"' in fresh_row
        assert "passed<" not in fresh_row

        one = await app.http.post(
            "/admin/replay", data={"csrf": csrf_in(page), "delivery": str(ids[old[0]])}
        )
        assert "Replay of delivery" in one.text and "0 re-queued" in one.text
        everything = await app.http.post(
            "/admin/replay", data={"csrf": csrf_in(page), "destination": "fake"}
        )
        assert "<strong>2 re-queued</strong>, 1 skipped" in everything.text
        assert "1 \u00d7 event is older than 7 days; fake accepts up to 7 days" in everything.text
        bad = await app.http.post("/admin/replay", data={"csrf": csrf_in(page), "delivery": "x1"})
        assert bad.status_code == 422
    statuses = {r.event_pk: r.status for r in delivery_rows(engine)}
    assert statuses == {fresh[0]: "pending", fresh[1]: "pending", old[0]: "failed"}
    engine.dispose()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    """The app over TLS on SQLite after real deliveries to the strict Meta fake: a retry, Meta
    refusing a revoked token, an event too old; one failure from eight days ago."""
    from firstparty.app import create_app

    harness.require_browser()
    url = f"sqlite:///{tmp_path / 'firstparty.db'}"
    engine = db.create_engine(url, poolclass=sa.NullPool)
    migrate.upgrade(engine)
    with FakeMeta() as meta, FakeMeta() as other:
        destinations = [
            factories.META_CAPI | {"api_base": meta.api_base},
            factories.META_CAPI
            | {"name": "meta_old_token", "api_base": other.api_base, "access_token": "EAAB-x"},
        ]
        settings = settings_with(url, *destinations)
        add_events(engine, ["meta", "meta_old_token"], 4, name="Lead")
        add_events(engine, ["meta"], 2, name="Purchase")
        add_events(
            engine, ["meta"], 1, name="Purchase", occurred_at=datetime.now(UTC) - timedelta(days=9)
        )
        old = add_events(engine, ["meta_old_token"], 1, name="Purchase")
        meta.script(meta.transient())
        work = make_worker(settings, engine)
        asyncio.run(_deliver_twice(work, engine))
        _age(engine, old, 8)
        meta.emq["Lead"] = 6.2  # Meta's verdict, pulled as the schedule would
        adapters = registry.adapters(settings.destinations)
        puller = verdicts.Puller(settings=settings, engine=engine, adapters=adapters)
        assert asyncio.run(_pull(puller)) == verdicts.Pulled(True, 2, 1)
        app = create_app(settings_for(url, destinations=destinations, delivery=FAST))
        with harness.ServerThread(app, harness.certificate(tmp_path)) as server:
            yield f"https://127.0.0.1:{server.port}"
    engine.dispose()


async def _pull(puller: verdicts.Puller) -> verdicts.Pulled:
    try:
        return await puller.round()
    finally:
        await puller.close()


async def _deliver_twice(work: object, engine: sa.Engine) -> None:
    from firstparty.delivery.worker import Worker

    assert isinstance(work, Worker)
    await work.drain()
    with engine.begin() as conn:  # the retry falls due
        conn.execute(
            sa.update(deliveries)
            .where(deliveries.c.status == "pending")
            .values(next_attempt_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    await work.drain()
    await work.stop()


def test_delivery_health_and_a_failed_delivery_in_chromium(served: str) -> None:
    base = served
    ARTIFACTS.mkdir(exist_ok=True)
    with harness.admin_page(base, TOKEN, height=800) as page:
        page.goto(f"{base}/admin/reports")
        page.click("#more-reports >> text=Delivery health")
        page.wait_for_url(re.compile(r".*/admin/reports/delivery-health.*"))
        row = page.locator('#health-table tr[data-destination="meta"][data-event="Lead"]')
        assert row.locator('[data-col="sent"]').inner_text() == "8"
        assert row.locator('[data-col="retried"]').inner_text() == "4"
        assert "Graph 190" in page.locator("#codes-table").inner_text()
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 1280, width
        page.screenshot(path=str(ARTIFACTS / "admin-delivery-health.png"), full_page=True)

        page.click("text=Match quality")
        page.wait_for_url(re.compile(r".*/admin/reports/match-quality.*"))
        lead = page.locator('section[data-destination="meta"] tr[data-event="Lead"]')
        assert lead.locator('[data-key="email"]').inner_text() == "100 %"
        assert "6.2" in lead.locator("td.verdict").inner_text()
        page.screenshot(path=str(ARTIFACTS / "admin-match-quality.png"), full_page=True)

        page.click("nav >> text=Failures")
        page.wait_for_url(f"{base}/admin/failures")
        preview = page.locator('.preview[data-destination="meta_old_token"]').inner_text()
        assert "would re-queue 4 and skip 1" in " ".join(preview.split())
        assert page.locator("#failed .would-skip").count() == 1
        page.screenshot(path=str(ARTIFACTS / "admin-failure-replay.png"), full_page=True)
        page.locator("#failed button.replay-one").first.click()
        page.locator("#replayed").wait_for()
        assert "1 re-queued" in " ".join(page.locator("#replayed").inner_text().split())
