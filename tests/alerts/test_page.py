"""The Alerts page through the real app: rules with their settings, a rule firing then resolved
(driven by the controlled clock, announced to the local webhook receiver), the messages sent
with their outcome, page by page; and Chromium screenshots of it with rules firing, then one
resolved."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from firstparty.alerts import state
from firstparty.alerts.loop import Evaluator
from firstparty.alerts.rules import AlertState, Channel
from firstparty.settings import Settings
from firstparty.store import db, migrate
from tests import factories
from tests.alerts import rows
from tests.alerts.rows import Clock
from tests.browser import harness
from tests.conftest import running_app, settings_for
from tests.fakes.server import Reply
from tests.fakes.webhook import FakeWebhook
from tests.web.test_admin_ui import TOKEN, signed_in_page

ARTIFACTS = Path(__file__).parents[1] / "browser" / "artifacts"
SECRET = "webhook-signing-secret-0123456789"


@pytest.fixture
def receiver() -> Iterator[FakeWebhook]:
    with FakeWebhook(secret=SECRET) as fake:
        yield fake


def alerting(database_url: str, receiver: FakeWebhook, **more: Any) -> Settings:
    alerts = {
        "webhook": {"url": receiver.url + "/hook", "secret": SECRET},
        "delivery_success": {"min_percent": 90, "window_minutes": 10},
        "source_silent": {"enabled": False},
    }
    return settings_for(database_url, alerts=alerts, **more)


async def evaluate(settings: Settings, engine: sa.Engine, clock: Clock) -> None:
    evaluator = Evaluator(settings=settings, engine=engine, clock=clock)
    try:
        await evaluator.round()
    finally:
        await evaluator.close()


def cells(page: str, table: str) -> list[list[str]]:
    """The text of each body row's cells of the table with this id."""
    body = page.split(f'id="{table}"', 1)[1].split("</table>", 1)[0].split("<tbody>", 1)[1]
    found = []
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S):
        texts = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        found.append([" ".join(html.unescape(re.sub(r"<[^>]+>", "", t)).split()) for t in texts])
    return found


async def test_the_page_shows_the_rules_a_firing_then_resolved_alert_and_the_messages(
    sqlite_url: str, receiver: FakeWebhook
) -> None:
    settings, clock = alerting(sqlite_url, receiver), Clock()
    async with running_app(settings) as app:
        quiet = await signed_in_page(app.http, "/admin/alerts")
        assert "No rule has fired yet." in quiet and "No message sent yet." in quiet
        assert "Nothing firing." in quiet and receiver.url not in quiet  # the URL is a secret
        assert "webhook (full body, signed)" in quiet
        by_rule = {r[0]: r for r in cells(quiet, "alert-rules")}
        assert set(by_rule) == {
            "delivery_success",
            "queue_lag",
            "source_silent",
            "server_errors",
            "destination_setup",
        }
        assert by_rule["delivery_success"][1] == "on" and by_rule["source_silent"][1] == "off"
        assert "min_percent = 90.0" in by_rule["delivery_success"][3]
        assert "window_minutes = 10" in by_rule["delivery_success"][3]
        assert "share of delivered requests" in by_rule["delivery_success"][2]

        rows.add_requests(app.engine, "meta", delivered=70, failed=30, at=clock.now)
        await evaluate(settings, app.engine, clock)
        firing = await signed_in_page(app.http, "/admin/alerts")
        assert "1 firing." in firing
        [now] = cells(firing, "alert-states")
        assert now[:4] == ["delivery_success", "meta", "firing", "2026-11-02 09:00:00 UTC"]
        assert now[4].startswith("70.0 % of 100 requests delivered")
        [told] = cells(firing, "alert-history")
        assert told[:6] == [
            "2026-11-02 09:00:00 UTC",
            "delivery_success",
            "meta",
            "firing",
            "webhook",
            "sent",
        ]

        clock.advance(minutes=31)
        rows.add_requests(app.engine, "meta", delivered=40, failed=0, at=clock.now)
        await evaluate(settings, app.engine, clock)
        resolved = await signed_in_page(app.http, "/admin/alerts")
        assert "Nothing firing." in resolved
        [now] = cells(resolved, "alert-states")
        assert now[:4] == ["delivery_success", "meta", "resolved", "2026-11-02 09:31:00 UTC"]
        history = cells(resolved, "alert-history")
        assert [(h[0], h[3], h[5]) for h in history] == [
            ("2026-11-02 09:31:00 UTC", "resolved", "sent"),
            ("2026-11-02 09:00:00 UTC", "firing", "sent"),
        ]
    assert [m["alert"]["state"] for m in receiver.messages] == ["firing", "resolved"]


async def test_a_message_the_channel_refused_is_listed_failed_with_why(
    sqlite_url: str, receiver: FakeWebhook
) -> None:
    settings, clock = alerting(sqlite_url, receiver), Clock()
    async with running_app(settings) as app:
        receiver.script(Reply(503))
        rows.add_requests(app.engine, "meta", delivered=0, failed=30, at=clock.now)
        await evaluate(settings, app.engine, clock)
        clock.advance(minutes=3)  # past the first evaluator's lease, inside the window
        await evaluate(settings, app.engine, clock)
        page = await signed_in_page(app.http, "/admin/alerts")
    history = cells(page, "alert-history")
    assert [(h[0][11:16], h[5]) for h in history] == [
        ("09:03", "sent"),
        ("09:00", "failed (webhook answered 503)"),
    ]


async def test_the_messages_are_paged_newest_first(sqlite_url: str) -> None:
    async with running_app(settings_for(sqlite_url)) as app:
        clock = Clock()
        for i in range(55):
            alert = state.Alert("queue_lag", f"s{i:02}", AlertState.FIRING, clock.now, "late")
            notice = state.Notice(alert, Channel.EMAIL, None, None)
            state.record_notice(app.engine, notice, at=clock.now, error=None)
            clock.advance(seconds=1)
        first = await signed_in_page(app.http, "/admin/alerts")
        subjects = [r[2] for r in cells(first, "alert-history")]
        assert subjects[0] == "s54" and subjects[-1] == "s05" and len(subjects) == 50
        link = re.search(r'id="next" href="([^"]+)"', first)
        assert link is not None
        second = await signed_in_page(app.http, html.unescape(link.group(1)))
        assert [r[2] for r in cells(second, "alert-history")] == [
            f"s{i:02}" for i in range(4, -1, -1)
        ]
        assert 'id="next"' not in second
        bad = await app.http.get("/admin/alerts?cursor=-1")
        assert bad.status_code == 422


@pytest.fixture
def served(tmp_path: Path, receiver: FakeWebhook) -> Iterator[tuple[str, sa.Engine, Settings]]:
    from firstparty.app import create_app

    url = f"sqlite:///{tmp_path / 'firstparty.db'}"
    engine = db.create_engine(url, poolclass=sa.NullPool)
    migrate.upgrade(engine)
    # Meta's token ends ten days after the test clock's start: destination_setup fires.
    meta = {**factories.META_CAPI, "credential_expires_at": "2026-11-12T09:00:00Z"}
    settings = alerting(url, receiver, destinations=[meta])
    with harness.ServerThread(create_app(settings), harness.certificate(tmp_path)) as server:
        yield f"https://127.0.0.1:{server.port}", engine, settings
    engine.dispose()


def test_screenshot_of_the_alerts_page_with_a_rule_firing_then_resolved(
    served: tuple[str, sa.Engine, Settings],
) -> None:
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    base, engine, settings = served
    clock = Clock()
    rows.add_requests(engine, "meta", delivered=95, failed=5, at=clock.now)
    rows.add_requests(engine, "tiktok", delivered=60, failed=40, at=clock.now)
    asyncio.run(evaluate(settings, engine, clock))
    clock.advance(minutes=31)
    rows.add_requests(engine, "meta", delivered=50, failed=0, at=clock.now)
    rows.add_requests(engine, "tiktok", delivered=10, failed=30, at=clock.now)
    rows.add_due_delivery(engine, "meta", due=clock.now)
    clock.advance(minutes=6)
    asyncio.run(evaluate(settings, engine, clock))
    ARTIFACTS.mkdir(exist_ok=True)
    with harness.admin_page(base, TOKEN, height=900) as page:
        page.goto(f"{base}/admin/alerts")
        assert page.inner_text("#firing-count") == "3 firing."
        assert page.locator("#alert-history tbody tr").count() == 3
        assert "credential expires at 2026-11-12 09:00 UTC" in page.inner_text("#alert-states")
        assert page.evaluate("document.documentElement.scrollWidth") <= 1280
        page.screenshot(path=str(ARTIFACTS / "admin-alerts.png"), full_page=True)
        # TikTok recovers: every request of the next window delivered, so its alert resolves.
        clock.advance(minutes=31)
        rows.add_requests(engine, "tiktok", delivered=100, failed=0, at=clock.now)
        with ThreadPoolExecutor(1) as other:  # Playwright's loop runs in this thread
            other.submit(asyncio.run, evaluate(settings, engine, clock)).result()
        page.goto(f"{base}/admin/alerts")
        assert page.inner_text("#firing-count") == "2 firing."
        tiktok = page.locator("#alert-states tbody tr", has_text="tiktok")
        assert "resolved" in tiktok.inner_text()
        history = page.locator("#alert-history tbody tr")
        assert history.count() == 4 and "resolved" in history.first.inner_text()
        page.screenshot(path=str(ARTIFACTS / "admin-alerts-resolved.png"), full_page=True)


async def test_with_alerts_off_the_page_says_so_and_every_rule_is_off(sqlite_url: str) -> None:
    async with running_app(settings_for(sqlite_url, alerts={"enabled": False})) as app:
        page = await signed_in_page(app.http, "/admin/alerts")
        events = await signed_in_page(app.http, "/admin/")
    assert "Alerts are off" in page and "Messages go to: <strong>nowhere</strong>" in page
    assert {r[1] for r in cells(page, "alert-rules")} == {"off"}
    assert '<a href="/admin/alerts" >Alerts</a>' in events  # the nav link, on every page
