"""The reports page in headless Chromium: a range picked with the filter form (no script), the
charts drawn, the numbers beside them; screenshots for docs/admin.md."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from firstparty.store import db, migrate
from firstparty.store import models as m
from tests import factories
from tests.browser import harness
from tests.conftest import SERVER_KEY, settings_for
from tests.delivery.outbox import set_status

ARTIFACTS = Path(__file__).parent / "artifacts"
TOKEN = "admin-token-for-tests"
DAYS = 10
# What each of the last DAYS days holds (a made-up but plausible shop): outcomes per event below.
STATUSES = ["delivered", "delivered", "delivered", "delivered", "failed", "skipped", "delivered"]


def _events(today: datetime) -> list[dict[str, object]]:
    batch: list[dict[str, object]] = []
    for ago in range(DAYS):
        day = today.date() - timedelta(days=ago)
        views, leads, sales = 12 + (ago * 7) % 11, 2 + ago % 3, 1 + (ago * 5) % 4
        for i, name in enumerate(["page"] * views + ["Lead"] * leads + ["Purchase"] * sales):
            when = datetime.combine(day, time(8 + i % 12, 7 * i % 60), tzinfo=UTC)
            if when > today:
                continue
            event: dict[str, object] = {"type": "track", "name": name}
            if name == "page":
                event = {"type": "page", "url": "https://www.example.test/offer"}
            stamp = {"event_id": f"{ago}-{i}", "timestamp": when.isoformat(), "user_id": f"u{i}"}
            batch.append(event | stamp)
    return batch


def _settle(engine: sa.Engine) -> None:
    """Outcomes as a worker would have left them, each outbox row dated when its event came."""
    d, e = m.deliveries.c, m.events.c
    with engine.begin() as conn:
        rows = conn.execute(
            sa.select(d.id, d.destination, e.occurred_at)
            .join(m.events, e.id == d.event_pk)
            .order_by(d.id)
        ).all()
        for n, row in enumerate(rows):
            status = STATUSES[n % len(STATUSES)] if row.destination == "meta" else "delivered"
            set_status(conn, status, d.id == row.id, created_at=row.occurred_at)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    from firstparty.app import create_app

    harness.require_browser()
    url = f"sqlite:///{tmp_path / 'firstparty.db'}"
    engine = db.create_engine(url, poolclass=sa.NullPool)
    migrate.upgrade(engine)
    hook = factories.FORWARDERS["webhook"] | {"url": "http://127.0.0.1:9/hook"}
    meta = factories.META_CAPI | {"dry_run": True}
    settings = settings_for(url, destinations=[meta, hook], reports={"time_zone": "Europe/Paris"})
    app = create_app(settings, run_worker=False)
    with harness.ServerThread(app, harness.certificate(tmp_path)) as server:
        base = f"https://127.0.0.1:{server.port}"
        batch = _events(datetime.now(UTC))
        with httpx.Client(verify=False, headers={"X-Write-Key": SERVER_KEY}) as client:
            for start in range(0, len(batch), 100):
                answer = client.post(
                    f"{base}/v1/batch", json={"events": batch[start : start + 100]}
                )
                assert answer.status_code in (200, 202), answer.text
        _settle(engine)
        engine.dispose()
        yield base


def test_pick_a_range_and_read_the_charts(served: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    with harness.admin_page(served, TOKEN, height=900) as page:
        page.goto(f"{served}/admin/reports")
        assert "Last 14 days" in page.inner_text("h1") and "Europe/Paris" in page.inner_text("h1")
        page.select_option("select[name=range]", "7d")
        page.click("#report-filters button[type=submit]")
        page.wait_for_url("**/admin/reports?range=7d*")
        assert "Last 7 days" in page.inner_text("h1")
        chart = page.locator("#daily svg[role=img]")
        assert chart.is_visible()
        box = chart.bounding_box()
        assert box is not None and box["width"] > 600 and box["height"] > 150
        bars = page.locator("#daily svg rect title")
        assert bars.count() == 7 * 2  # a bar of events and one of conversions per day
        assert page.locator("#outcomes svg[role=img]").count() == 2  # hook and meta
        assert page.evaluate("document.documentElement.scrollWidth") <= 1280
        page.screenshot(path=str(ARTIFACTS / "admin-reports.png"), full_page=False)
        page.locator("#outcomes").screenshot(path=str(ARTIFACTS / "admin-reports-outcomes.png"))
        page.click("#daily details summary")
        assert page.locator("#daily-table tbody tr").count() == 7
