"""analytics.js (@segment/analytics-next) in headless Chromium, served locally, no Segment CDN.

The site is http://www.example.test:<port>, firstparty http://t.example.test:<port>, both on
127.0.0.1. The page loads the npm package's UMD build from the site and sets one option,
`cdnURL`, to firstparty's `/segment`: the settings come from there and name firstparty as the
API host. Skipped when Node/npm, Playwright or /usr/bin/chromium is missing, except under CI=true.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser import harness
from tests.fakes.server import FakeServer, Received, Reply
from tests.segment import stack

HOSTS = f"MAP {stack.SITE_HOST} 127.0.0.1, MAP {stack.TRACKER_HOST} 127.0.0.1"
ARGS = [
    *harness.CHROMIUM_ARGS,
    "--no-proxy-server",
    f"--host-resolver-rules={HOSTS}",
]
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Pricing</title>
<script src="/ajs/index.js"></script>
<script>
  var analytics = AnalyticsNext.AnalyticsBrowser.load(
    {{writeKey: "{key}", cdnURL: "{cdn}"}});
  window.sent = (async function () {{
    var page = await analytics.page();
    var track = await analytics.track("Lead", {{value: 49, currency: "USD"}});
    return [page.event.messageId, track.event.messageId];
  }})();
</script>
</head><body><h1>Pricing</h1></body></html>
"""


class Site(FakeServer):
    """The marketing site: one page, and analytics.js's UMD build from node_modules."""

    def __init__(self, umd: Path) -> None:
        super().__init__()
        self.umd = umd
        self.page = ""

    def handle(self, request: Received) -> Reply:
        if request.path.startswith("/ajs/"):
            file = self.umd / request.path.removeprefix("/ajs/")
            if file.parent == self.umd and file.is_file():
                return Reply(200, file.read_bytes(), {"Content-Type": "text/javascript"})
            return Reply(404, b"")
        return Reply(200, self.page.encode(), {"Content-Type": "text/html; charset=utf-8"})


@pytest.fixture(scope="module")
def site_and_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, Any]]:
    stack.require("the analytics.js browser test", harness.browser_missing())
    umd = stack.node_modules() / "@segment" / "analytics-next" / "dist" / "umd"
    with Site(umd) as site:
        port = int(site.url.rsplit(":", 1)[1])
        with stack.running(tmp_path_factory.mktemp("segment-browser"), port) as running:
            tracker = f"http://{stack.TRACKER_HOST}:{running.url.rsplit(':', 1)[1]}"
            site.page = PAGE.format(key=stack.BROWSER_KEY, cdn=tracker + "/segment")
            yield site, running


def _stored(db: Path, message_ids: list[str]) -> list[dict[str, Any]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.row_factory = sqlite3.Row
        marks = ",".join("?" * len(message_ids))
        query = f"SELECT event_id, type, name, visitor_id FROM events WHERE event_id IN ({marks})"
        return [dict(row) for row in conn.execute(query, message_ids)]


def _both(db: Path, ids: list[str]) -> Callable[[], list[dict[str, Any]]]:
    """A condition: both events of one visit are stored (returns them)."""
    return lambda: found if len(found := _stored(db, ids)) == 2 else []


def test_analytics_js_sends_page_and_track_with_the_first_party_cookie(
    site_and_stack: tuple[Site, Any],
) -> None:
    from playwright.sync_api import sync_playwright

    site, running = site_and_stack
    url = f"http://{stack.SITE_HOST}:{site.url.rsplit(':', 1)[1]}/pricing?gclid=G1"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=harness.CHROMIUM, headless=True, args=ARGS)
        try:
            context = browser.new_context()
            context.set_default_timeout(20_000)
            page = context.new_page()
            hosts: set[str] = set()
            page.on("request", lambda r: hosts.add(r.url.split("/")[2].split(":")[0]))
            visits = []
            for _ in range(2):  # a second visit must come back as the same visitor
                page.goto(url)
                ids: list[str] = page.evaluate("window.sent")
                visits.append(stack.wait_until(_both(running.db, ids), "analytics.js events"))
            cookies = {c["name"]: c for c in context.cookies()}
        finally:
            browser.close()
    assert hosts <= {stack.SITE_HOST, stack.TRACKER_HOST}, f"left the first party: {hosts}"
    fp_id = cookies["fp_id"]
    assert fp_id["domain"].lstrip(".") == "example.test" and fp_id["httpOnly"]
    visitor = fp_id["value"].split(".")[0]
    for rows in visits:
        assert sorted((r["type"], r["name"]) for r in rows) == [("page", "page"), ("track", "Lead")]
        assert {r["visitor_id"] for r in rows} == {visitor}
    sent = {r["event_id"] for rows in visits for r in rows}
    stack.wait_until(
        lambda: sent <= set(running.receiver.event_ids()),
        "analytics.js events to reach the fake destination",
    )
