"""The admin UI through the real app: sign-in, refusals, CSRF, every page with real data, the
replay button, the reports on every engine, and screenshots in headless Chromium."""

from __future__ import annotations

import html
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from firstparty.reports import summary
from firstparty.store import db, migrate
from firstparty.store import models as m
from firstparty.web import admin, sessions
from tests.browser import harness
from tests.conftest import (
    BROWSER_KEY,
    SERVER_KEY,
    AppClient,
    running_app,
    settings_for,
)
from tests.delivery.conftest import receiver
from tests.delivery.outbox import eventually, fake_destination, set_status
from tests.delivery.receiver import Receiver

__all__ = ["receiver"]  # the fake platform fixture, shared with the delivery tests

TOKEN = "admin-token-for-tests"
SITE = "https://www.example.test"
FAST = {"backoff_base_seconds": 0.01, "backoff_max_seconds": 0.05, "sweep_interval_seconds": 0.1}
# A person's browser: HTTP libraries' own user agents are flagged as robots and not forwarded.
BROWSER_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0 Safari/537.36"
)
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_in(page: str) -> str:
    found = CSRF.search(page)
    assert found, "the page carries a CSRF token"
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, token: str = TOKEN) -> httpx.Response:
    form = await client.get("/admin/login")
    assert form.status_code == 200
    data = {"csrf": csrf_in(form.text), "token": token}
    return await client.post("/admin/login", data=data)


async def signed_in_page(client: httpx.AsyncClient, path: str = "/admin/") -> str:
    """Signs in if needed and answers the page's HTML (asserting a 200)."""
    page = await client.get(path)
    if page.status_code == 303:
        assert (await sign_in(client)).status_code == 303
        page = await client.get(path)
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    return page.text


async def browser_send(app: AppClient, jar: httpx.AsyncClient, event: dict[str, Any]) -> None:
    """An event from a browser (its own cookie jar, hence its own visitor)."""
    headers = {"X-Write-Key": BROWSER_KEY, "Origin": SITE, "User-Agent": BROWSER_UA}
    r = await jar.post("/v1/events", json=event, headers=headers)
    assert r.status_code == 202, r.text


async def server_send(app: AppClient, event: dict[str, Any]) -> None:
    r = await app.http.post("/v1/events", json=event, headers={"X-Write-Key": SERVER_KEY})
    assert r.status_code == 202, r.text


async def get_with_session(app: AppClient, value: str, path: str = "/admin/") -> httpx.Response:
    """A GET from a client holding only this session cookie value."""
    async with browser(app) as http:
        return await http.get(path, headers={"Cookie": f"{admin.SESSION_COOKIE}={value}"})


def browser(app: AppClient) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app.app, client=("198.51.100.8", 50000))
    return httpx.AsyncClient(transport=transport, base_url="https://t.example.test")


# ---------------------------------------------------------------- sign-in and refusals


async def test_pages_refuse_without_a_session(sqlite_client: AppClient) -> None:
    for path in (
        "/admin/",
        "/admin/deliveries",
        "/admin/failures",
        "/admin/reports",
        "/admin/events/x",
    ):
        r = await sqlite_client.http.get(path)
        assert r.status_code == 303 and r.headers["location"] == "/admin/login"
    for path in ("/admin/replay", "/admin/logout"):
        r = await sqlite_client.http.post(path, data={"csrf": "x"})
        assert r.status_code == 303 and r.headers["location"] == "/admin/login"
    r = await get_with_session(sqlite_client, "nonce.9999999999.bad-mac")
    assert r.status_code == 303


async def test_sign_in_sets_a_signed_strict_cookie_and_sign_out_clears_it(
    sqlite_client: AppClient,
) -> None:
    http = sqlite_client.http
    wrong = await sign_in(http, "not-the-token")
    assert wrong.status_code == 401 and "Wrong admin token" in wrong.text
    assert admin.SESSION_COOKIE not in http.cookies

    ok = await sign_in(http)
    assert ok.status_code == 303 and ok.headers["location"] == "/admin/"
    [cookie] = [c for c in ok.headers.get_list("set-cookie") if c.startswith("fp_admin=")]
    attributes = {a.strip().lower() for a in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "secure", "path=/admin"} <= attributes
    value = cookie.split(";")[0].split("=", 1)[1]
    assert TOKEN not in value and sessions.session_valid(sqlite_client.settings, value, time.time())
    assert "Sign out" in await signed_in_page(http)

    # Signed over its expiry: a longer life is a forgery.
    nonce, expiry, mac = value.split(".")
    stretched = f"{nonce}.{int(expiry) + 86400}.{mac}"
    assert (await get_with_session(sqlite_client, stretched)).status_code == 303
    assert (await get_with_session(sqlite_client, value)).status_code == 200

    page = await signed_in_page(http)
    out = await http.post("/admin/logout", data={"csrf": csrf_in(page)})
    assert out.status_code == 303 and out.headers["location"] == "/admin/login"
    assert (await http.get("/admin/")).status_code == 303


async def test_cookie_is_not_secure_on_plain_http(sqlite_client: AppClient) -> None:
    transport = httpx.ASGITransport(app=sqlite_client.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as http:
        ok = await sign_in(http)
    [cookie] = [c for c in ok.headers.get_list("set-cookie") if c.startswith("fp_admin=")]
    assert "secure" not in cookie.lower() and "samesite=strict" in cookie.lower()


def test_sessions_expire_and_end_when_the_token_changes(sqlite_url: str) -> None:
    settings = settings_for(sqlite_url)
    now = time.time()
    value = sessions.issue_session(settings, now)
    assert sessions.session_valid(settings, value, now)
    assert not sessions.session_valid(settings, value, now + sessions.SESSION_SECONDS + 1)
    assert not sessions.session_valid(
        settings_for(sqlite_url, admin_token="rotated-admin-token-2"), value, now
    )
    assert not sessions.session_valid(settings_for(sqlite_url, admin_token=None), value, now)


async def test_posts_need_the_csrf_token(sqlite_client: AppClient) -> None:
    http = sqlite_client.http
    login = await http.get("/admin/login")
    refused = await http.post("/admin/login", data={"token": TOKEN})
    assert refused.status_code == 403 and admin.SESSION_COOKIE not in http.cookies
    other = sessions.csrf_token(sqlite_client.settings, "another-login-cookie-x")
    refused = await http.post("/admin/login", data={"token": TOKEN, "csrf": other})
    assert refused.status_code == 403
    assert csrf_in(login.text)

    page = await signed_in_page(http)
    for data in ({}, {"csrf": "forged"}, {"csrf": csrf_in(page) + "x"}):
        assert (await http.post("/admin/replay", data=data)).status_code == 403
        assert (await http.post("/admin/logout", data=data)).status_code == 403
    assert (await http.get("/admin/")).status_code == 200, "still signed in"
    # A JSON body is not a form: no token in it.
    r = await http.post("/admin/replay", json={"csrf": csrf_in(page)})
    assert r.status_code == 403


async def test_without_an_admin_token_the_ui_says_so_and_refuses(sqlite_url: str) -> None:
    async with running_app(settings_for(sqlite_url, admin_token=None)) as client:
        page = await client.http.get("/admin/login")
        assert page.status_code == 403 and "FIRSTPARTY_ADMIN_TOKEN" in page.text
        r = await client.http.post("/admin/login", data={"token": TOKEN, "csrf": "x"})
        assert r.status_code == 403
        assert (await client.http.get("/admin/")).status_code == 303


# ---------------------------------------------------------------- pages with real data


@pytest.fixture
async def forwarding(database_url: str) -> AsyncIterator[AppClient]:
    """Two destinations (worker off, so the outbox stays as ingest left it, for the reports)."""
    destinations = [
        fake_destination("http://127.0.0.1:9", events={"Lead": "Lead", "Purchase": "Purchase"}),
        fake_destination("http://127.0.0.1:9", name="other", events={"Purchase": "Purchase"}),
    ]
    async with running_app(settings_for(database_url, destinations=destinations)) as client:
        yield client


async def seed_journeys(app: AppClient) -> None:
    """Three browsers and the CRM: 4 conversions this fortnight, 1 older."""
    landings = [
        ("a", f"{SITE}/?utm_source=news&gclid=G-1", "Lead"),
        ("b", f"{SITE}/offer?utm_source=news&fbclid=F-1&gclid=G-2", "Purchase"),
        ("c", f"{SITE}/", "Lead"),
    ]
    for tag, url, conversion in landings:
        async with browser(app) as jar:
            await browser_send(app, jar, {"type": "page", "url": url, "event_id": f"land-{tag}"})
            body = {"type": "track", "name": conversion, "event_id": f"conv-{tag}"}
            await browser_send(app, jar, {**body, "url": url})
    await server_send(app, {"type": "track", "name": "Lead", "event_id": "crm-1"})
    old = (datetime.now(UTC) - timedelta(days=20)).isoformat()
    await server_send(
        app, {"type": "track", "name": "Lead", "event_id": "crm-old", "timestamp": old}
    )


async def test_deliveries_page_says_which_destinations_are_in_test_mode(sqlite_url: str) -> None:
    destinations = [
        fake_destination("http://127.0.0.1:9", name="live"),
        fake_destination("http://127.0.0.1:9", name="trial", test_event_code="TEST123"),
    ]
    settings = settings_for(sqlite_url, destinations=destinations)
    async with running_app(settings) as client, browser(client) as http:
        page = await signed_in_page(http, "/admin/deliveries")
    notice = re.search(r'<p class="notice warn" id="test-mode">(.*?)</p>', page, re.S)
    assert notice and "<b>trial</b> (test_event_code=TEST123)" in notice.group(1)
    assert "live" not in notice.group(1)
    rows = re.findall(r"<tr><td>(\w+)</td>.*?</tr>", page.split('id="destination-modes"')[1], re.S)
    assert rows == ["live", "trial"]


async def test_no_test_mode_notice_when_every_destination_is_live(sqlite_url: str) -> None:
    destinations = [fake_destination("http://127.0.0.1:9", name="live")]
    settings = settings_for(sqlite_url, destinations=destinations)
    async with running_app(settings) as client, browser(client) as http:
        page = await signed_in_page(http, "/admin/deliveries")
    assert 'id="test-mode"' not in page and "live" in page


def set_statuses(app: AppClient, destination: str, statuses: list[str]) -> None:
    """Marks the destination's outbox rows (oldest first) as a worker would have left them,
    their counts (delivery.tally, delivery.failures) moved with them as the outbox moves them."""
    d = m.deliveries.c
    with app.engine.begin() as conn:
        ids = conn.execute(
            sa.select(d.id).where(d.destination == destination).order_by(d.id)
        ).scalars()
        for id_, status in zip(list(ids), statuses, strict=True):
            error = "400: invalid parameter" if status == "failed" else None
            set_status(conn, status, d.id == id_, last_error=error)


async def test_reports_count_right_on_every_engine(forwarding: AppClient) -> None:
    await seed_journeys(forwarding)
    set_statuses(forwarding, "fake", ["delivered", "delivered", "delivered", "failed", "pending"])
    set_statuses(forwarding, "other", ["failed"])
    engine, now = forwarding.engine, datetime.now(UTC)

    per_day = summary.events_per_day(engine, now=now)
    assert per_day.names == ["Lead", "Purchase", "page"]
    assert len(per_day.days) == 14 and per_day.days[-1][0] == now.date()
    totals = [sum(counts[i] for _, counts in per_day.days) for i in range(3)]
    assert totals == [3, 1, 3], "the 20-day-old Lead is outside the window"
    later = summary.events_per_day(engine, now=now + timedelta(days=30))
    assert later.names == [] and [counts for _, counts in later.days] == [[]] * 14

    by_source = summary.conversions_by_utm_source(engine, now=now)
    assert [(b.label, b.count) for b in by_source] == [("(none)", 2), ("news", 2)]
    by_click = summary.conversions_by_click_kind(engine, now=now)
    assert [(b.label, b.count) for b in by_click] == [("(none)", 2), ("gclid", 2), ("fbclid", 1)]

    rates = {r.destination: r for r in summary.delivery_rates(engine, now=now)}
    assert rates["fake"].statuses == {"delivered": 3, "failed": 1, "pending": 1}
    assert rates["fake"].success_rate == 0.75 and rates["fake"].total == 5
    assert rates["fake"].waiting == 1
    assert rates["other"].success_rate == 0.0

    groups = summary.failures(engine)
    assert [(g.destination, g.reason, g.count) for g in groups] == [
        ("fake", "400: invalid parameter", 1),
        ("other", "400: invalid parameter", 1),
    ]

    page = await signed_in_page(forwarding.http, "/admin/reports")
    assert "75.0 %" in page and "news" in page and "gclid" in page


async def test_pages_show_events_visitor_and_escape(sqlite_url: str) -> None:
    destinations = [fake_destination("http://127.0.0.1:9", events={"Purchase": "Purchase"})]
    async with running_app(settings_for(sqlite_url, destinations=destinations)) as app:
        await seed_journeys(app)
        async with browser(app) as jar:
            nasty = {
                "type": "track",
                "name": "Lead",
                "event_id": "x<b>1</b>",
                "properties": {"note": "<script>alert(1)</script>"},
            }
            await browser_send(app, jar, nasty)
        http = app.http

        events = await signed_in_page(http)
        for event_id in ("land-a", "conv-b", "crm-1"):
            assert event_id in events
        assert "<script>alert" not in events and "x&lt;b&gt;1&lt;/b&gt;" in events

        leads = await signed_in_page(http, "/admin/?name=Lead&source=www")
        assert "conv-a" in leads and "land-a" not in leads and "crm-1" not in leads

        with app.engine.connect() as conn:
            row = conn.execute(
                sa.select(m.events.c.id, m.events.c.visitor_id).where(
                    m.events.c.event_id == "conv-b"
                )
            ).one()
            nasty_pk = conn.execute(
                sa.select(m.events.c.id).where(m.events.c.event_id == "x<b>1</b>")
            ).scalar_one()
        by_visitor = await signed_in_page(http, f"/admin/?visitor_id={row.visitor_id}")
        assert "land-b" in by_visitor and "conv-b" in by_visitor and "conv-a" not in by_visitor

        detail = await signed_in_page(http, f"/admin/events/{row.id}")
        assert "G-2" in detail and "F-1" in detail and "fbclid" in detail
        assert '"utm_source": "news"' in html.unescape(detail)  # the first touch
        assert "pending" in detail and "fake" in detail  # its delivery, not yet sent
        escaped = await signed_in_page(http, f"/admin/events/{nasty_pk}")
        assert "<script>alert" not in escaped and "&lt;script&gt;alert(1)&lt;/script&gt;" in escaped

        missing = await http.get("/admin/events/nope")
        assert missing.status_code == 404 and "No such event" in missing.text

        deliveries = await signed_in_page(http, "/admin/deliveries")
        assert "No outgoing requests" in deliveries
        bad = await http.get("/admin/deliveries?status=lost")
        assert bad.status_code == 422 and "Status must be one of" in bad.text

        failures = await signed_in_page(http, "/admin/failures")
        assert "No failed deliveries" in failures


async def test_events_page_by_cursor(sqlite_client: AppClient) -> None:
    for i in range(admin.PAGE_SIZE + 5):
        await server_send(sqlite_client, {"type": "track", "name": "Lead", "event_id": f"p-{i:03}"})
    first = await signed_in_page(sqlite_client.http)
    link = re.search(r'id="next" href="([^"]+)"', first)
    assert link and "p-054" in first and "p-004" not in first
    second = await signed_in_page(sqlite_client.http, html.unescape(link.group(1)))
    assert "p-004" in second and "p-000" in second and "p-054" not in second
    assert 'id="next"' not in second


# ---------------------------------------------------------------- failures and the replay button


@pytest.fixture
async def live(sqlite_url: str, receiver: Receiver) -> AsyncIterator[AppClient]:
    """The embedded worker delivering to a fake receiver that rejects what it is told to."""
    settings = settings_for(
        sqlite_url,
        destinations=[fake_destination(receiver.url, max_attempts=2)],
        delivery=FAST,
    )
    async with running_app(settings, run_worker=True) as client:
        yield client


def statuses(app: AppClient) -> dict[str, str]:
    """event_id -> delivery status."""
    query = sa.select(m.events.c.event_id, m.deliveries.c.status).join(
        m.deliveries, m.deliveries.c.event_pk == m.events.c.id
    )
    with app.engine.connect() as conn:
        return {r.event_id: r.status for r in conn.execute(query)}


def settled(live: AppClient, event_id: str) -> bool:
    return statuses(live).get(event_id) in {"delivered", "failed"}


async def test_failures_page_and_replay_button_requeue_failed_work(
    live: AppClient, receiver: Receiver
) -> None:
    receiver.reject["bad-1"] = "invalid parameter: value"
    receiver.reject["bad-2"] = "invalid parameter: value"
    # One at a time, each settled before the next: the worker may batch events that arrive
    # together, and a request carrying good-1 with bad-1 would be listed among the failures.
    for event_id in ("good-1", "bad-1", "bad-2"):
        await server_send(live, {"type": "track", "name": "Lead", "event_id": event_id})
        await eventually(partial(settled, live, event_id))
    assert statuses(live) == {"good-1": "delivered", "bad-1": "failed", "bad-2": "failed"}

    http = live.http
    failures = await signed_in_page(http, "/admin/failures")
    assert "invalid parameter: value" in failures and "2 failed" in failures
    assert 'data-destination="fake"' in failures and 'id="replay-all"' in failures

    deliveries = await signed_in_page(http, "/admin/deliveries?status=failed")
    assert "bad-1" in deliveries and "good-1" not in deliveries
    assert "fake-api-key" not in deliveries

    with live.engine.connect() as conn:
        pk = conn.execute(
            sa.select(m.events.c.id).where(m.events.c.event_id == "bad-1")
        ).scalar_one()
    detail = await signed_in_page(http, f"/admin/events/{pk}")
    assert "invalid parameter" in detail and "/events" in detail and "fake-api-key" not in detail

    unknown = await http.post("/admin/replay", data={"csrf": csrf_in(failures), "destination": "x"})
    assert unknown.status_code == 422

    receiver.reject.clear()  # the cause is fixed
    replayed = await http.post(
        "/admin/replay", data={"csrf": csrf_in(failures), "destination": "fake"}
    )
    assert replayed.status_code == 200
    assert "2 re-queued" in replayed.text and "0 skipped" in replayed.text
    await eventually(lambda: set(statuses(live).values()) == {"delivered"})
    assert sorted(e["event_id"] for e in receiver.accepted) == ["bad-1", "bad-2", "good-1"]

    again = await http.post("/admin/replay", data={"csrf": csrf_in(failures), "destination": ""})
    assert "every destination: 0 failed" in again.text and "No failed deliveries" in again.text
    with live.engine.connect() as conn:
        audits = list(conn.execute(sa.select(m.replays).order_by(m.replays.c.id)))
    assert [a.requeued for a in audits] == [2, 0]


# ---------------------------------------------------------------- screenshots in Chromium

ARTIFACTS = Path(__file__).parents[1] / "browser" / "artifacts"
ARGS = [
    *harness.CHROMIUM_ARGS,
]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, sa.Engine]]:
    """The app under uvicorn over TLS, its worker failing against a dead platform."""
    from firstparty.app import create_app

    url = f"sqlite:///{tmp_path / 'firstparty.db'}"
    engine = db.create_engine(url, poolclass=sa.NullPool)
    migrate.upgrade(engine)
    dead = harness.bound_socket()  # never listening: every send fails
    platform = f"http://127.0.0.1:{dead.getsockname()[1]}"
    destinations = [
        fake_destination(platform, name="meta", max_attempts=1),
        fake_destination(
            platform,
            name="tiktok",
            max_attempts=1,
            events={"Purchase": "Purchase"},
            test_event_code="TEST4821",
        ),
    ]
    settings = settings_for(url, destinations=destinations, delivery=FAST)
    server = harness.ServerThread(
        create_app(settings, run_worker=True), harness.certificate(tmp_path)
    )
    with server:
        yield f"https://127.0.0.1:{server.port}", engine
    dead.close()
    engine.dispose()


def _seed_over_https(base: str) -> None:
    with httpx.Client(base_url=base, verify=False) as http:
        for i, (name, url) in enumerate(
            [
                ("page", f"{SITE}/?utm_source=news&gclid=Cj0KCQ-{uuid.uuid4().hex[:8]}"),
                ("Lead", f"{SITE}/signup"),
                ("Purchase", f"{SITE}/checkout"),
                ("page", f"{SITE}/pricing?fbclid=IwAR-{uuid.uuid4().hex[:8]}"),
            ]
        ):
            body = {
                "type": "page" if name == "page" else "track",
                "url": url,
                "event_id": f"shot-{i}",
            }
            if name != "page":
                body["name"] = name
            headers = {"X-Write-Key": BROWSER_KEY, "Origin": SITE}
            assert http.post("/v1/events", json=body, headers=headers).status_code == 202
        crm = {"type": "track", "name": "Purchase", "event_id": "crm-order-1001"}
        assert (
            http.post("/v1/events", json=crm, headers={"X-Write-Key": SERVER_KEY}).status_code
            == 202
        )


def test_screenshots_of_events_and_failures(served: tuple[str, sa.Engine]) -> None:
    reason = harness.browser_missing()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser test cannot run: {reason}", pytrace=False)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    base, engine = served
    _seed_over_https(base)

    def all_failed() -> bool:
        with engine.connect() as conn:
            found = set(conn.execute(sa.select(m.deliveries.c.status)).scalars())
        return found == {"failed"}

    harness.wait_until(all_failed, "every delivery to fail against the dead platform")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=harness.CHROMIUM, headless=True, args=ARGS)
        context = chromium.new_context(
            ignore_https_errors=True, viewport={"width": 1280, "height": 800}
        )
        context.set_default_timeout(15_000)
        page = context.new_page()
        page.goto(f"{base}/admin/")
        assert page.url.endswith("/admin/login")
        page.fill("input[name=token]", TOKEN)
        page.click("#token-form button[type=submit]")
        page.wait_for_url(f"{base}/admin/")
        assert page.locator("#events tbody tr").count() == 5
        page.screenshot(path=str(ARTIFACTS / "admin-events.png"), full_page=True)

        page.goto(f"{base}/admin/failures")
        assert page.locator("button.replay").count() == 2
        page.screenshot(path=str(ARTIFACTS / "admin-failures.png"), full_page=True)
        page.click("#replay-all")
        page.wait_for_selector("#replayed")
        assert "re-queued" in page.inner_text("#replayed")

        page.goto(f"{base}/admin/deliveries")
        assert "tiktok (test_event_code=TEST4821)" in page.inner_text("#test-mode")
        page.screenshot(path=str(ARTIFACTS / "admin-deliveries.png"), full_page=True)

        page.goto(f"{base}/admin/reports")
        headers = page.inner_text("#rates thead")
        assert "waiting" in headers and "test" in headers
        page.screenshot(path=str(ARTIFACTS / "admin-reports.png"), full_page=True)
        chromium.close()
    assert (ARTIFACTS / "admin-events.png").stat().st_size > 0
    assert (ARTIFACTS / "admin-failures.png").stat().st_size > 0
