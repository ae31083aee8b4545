"""Issue 11, visitors: one visitor per first visit, GA4 sessions kept server-side, and the proxy
warning. Through the real app, on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
import uvicorn

from firstparty import doctor
from firstparty.api import collect as collect_api
from firstparty.app import create_app
from firstparty.store import models as m
from tests.conftest import BROWSER_KEY, AppClient, running_app, settings_for

SITE = "https://www.example.test"
BROWSER = {"X-Write-Key": BROWSER_KEY, "Origin": SITE}


async def test_a_cookie_less_batch_mints_one_visitor(app_client: AppClient) -> None:
    events = [
        {"type": "track", "name": "Lead", "url": SITE + "/apply?gclid=G-first"},
        {"type": "page", "url": SITE + "/apply"},
        {"type": "track", "name": "Clicked"},
    ]
    r = await app_client.http.post("/v1/batch", json={"events": events}, headers=BROWSER)
    assert r.status_code == 200
    visitors = {x["visitor_id"] for x in r.json()["results"]}
    assert len(visitors) == 1
    [visitor] = app_client.rows(m.visitors)
    assert visitor["id"] in visitors
    assert visitor["first_touch"]["click_ids"] == {"gclid": "G-first"}  # from the first item
    assert {row["visitor_id"] for row in app_client.rows(m.events)} == visitors
    # The cookie set on the answer names that visitor: the next request stays on it.
    again = await app_client.http.post("/v1/events", json={"type": "page"}, headers=BROWSER)
    assert again.json()["visitor_id"] in visitors
    assert len(app_client.rows(m.visitors)) == 1


def _sessions(client: AppClient) -> list[tuple[str, str, str]]:
    rows = sorted(client.rows(m.events), key=lambda r: r["received_at"])
    return [(r["name"], r["context"]["session_id"], r["context"]["session_number"]) for r in rows]


async def test_browser_events_carry_a_ga4_session_with_30_minutes_of_inactivity(
    app_client: AppClient,
) -> None:
    first = await app_client.http.post("/v1/events", json={"type": "page"}, headers=BROWSER)
    visitor_id = first.json()["visitor_id"]
    await app_client.http.post(
        "/v1/events", json={"type": "track", "name": "Soon"}, headers=BROWSER
    )
    [(_, started, number), (_, same, same_number)] = _sessions(app_client)
    [row] = app_client.rows(m.visitors)
    assert started == str(int(row["first_seen_at"].timestamp())) and number == "1"
    assert (same, same_number) == (started, "1")
    # 31 minutes without activity: the next event opens session 2.
    with app_client.engine.begin() as conn:
        idle = datetime.now(UTC) - timedelta(minutes=31)
        began = idle - timedelta(minutes=9)
        conn.execute(sa.update(m.visitors).values(last_seen_at=idle, session_started_at=began))
    await app_client.http.post(
        "/v1/events", json={"type": "track", "name": "Later"}, headers=BROWSER
    )
    later = _sessions(app_client)[-1]
    [row] = app_client.rows(m.visitors)
    assert later == ("Later", str(int(row["session_started_at"].timestamp())), "2")
    assert int(later[1]) >= int(began.timestamp()) + 40 * 60 - 2 and row["id"] == visitor_id
    assert row["session_number"] == 2


async def test_server_events_get_no_session(sqlite_client: AppClient) -> None:
    headers = {"X-Write-Key": "wk_server_test_key_secret"}
    await sqlite_client.http.post("/v1/events", json={"type": "page"}, headers=headers)
    [row] = sqlite_client.rows(m.events)
    assert "session_id" not in row["context"]


@pytest.fixture
def fresh_proxy_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(collect_api, "_proxy_warned", [])


async def test_an_ignored_x_forwarded_for_is_logged_once(
    sqlite_client: AppClient, caplog: pytest.LogCaptureFixture, fresh_proxy_warning: None
) -> None:
    caplog.set_level(logging.WARNING, "firstparty.collect")
    headers = BROWSER | {"X-Forwarded-For": "203.0.113.50"}
    for _ in range(3):
        r = await sqlite_client.http.post("/v1/events", json={"type": "page"}, headers=headers)
        assert r.status_code == 202
    warned = [r for r in caplog.records if "trust_forwarded_for is off" in r.getMessage()]
    assert len(warned) == 1
    assert all(row["context"]["ip"] == "198.51.100.7" for row in sqlite_client.rows(m.events))


async def test_a_trusted_x_forwarded_for_is_used_without_warning(
    sqlite_url: str, caplog: pytest.LogCaptureFixture, fresh_proxy_warning: None
) -> None:
    caplog.set_level(logging.WARNING, "firstparty.collect")
    collect = {"trust_forwarded_for": True, "trusted_hops": 2}
    settings = settings_for(sqlite_url, collect=collect)
    async with running_app(settings) as client:
        headers = BROWSER | {"X-Forwarded-For": "203.0.113.50, 10.0.0.1"}
        await client.http.post("/v1/events", json={"type": "page"}, headers=headers)
        [row] = client.rows(m.events)
    assert row["context"]["ip"] == "203.0.113.50"
    assert not [r for r in caplog.records if "trust_forwarded_for" in r.getMessage()]


class ProxyFront:
    """A reverse proxy in front of the app: it adds X-Forwarded-For to every request."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = [*scope["headers"], (b"x-forwarded-for", b"203.0.113.50")]
            scope = {**scope, "headers": headers}
        await self.app(scope, receive, send)


@pytest.fixture
def tracker_behind_proxy(sqlite_url: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """The real app served by uvicorn on a loopback port; `proxy` param: a proxy in front."""
    app = create_app(settings_for(sqlite_url), run_worker=False)
    served = ProxyFront(app) if request.param else app
    config = uvicorn.Config(served, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.mark.parametrize(
    ("tracker_behind_proxy", "level"),
    [(True, "warn"), (False, "ok")],
    indirect=["tracker_behind_proxy"],
)
def test_doctor_probes_the_tracker_for_an_ignored_proxy(
    tracker_behind_proxy: str, level: str
) -> None:
    findings = doctor.check(
        SITE, tracker_behind_proxy, doctor.StaticResolver(), doctor.HttpProber()
    )
    [proxy] = [f for f in findings if "X-Forwarded-For" in f.message]
    assert proxy.level == level
    if level == "warn":
        assert "trust_forwarded_for is off" in proxy.message and "Meta and TikTok" in proxy.message
