"""fp.js and the fp_id cookie in a real browser: headless Chromium against the real server.

The site is https://www.example.test:<port>, the tracker https://t.example.test:<port>, both on
127.0.0.1 with a throwaway certificate. Skipped when Playwright or /usr/bin/chromium is missing,
except under CI=true, where that is a failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from firstparty.settings import Settings
from firstparty.store import db, migrate
from firstparty.store import models as m
from tests.browser import harness
from tests.conftest import BROWSER_KEY, SECRET

ARTIFACTS = Path(__file__).with_name("artifacts")


if (_reason := harness.browser_missing()) is not None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"browser tests cannot run: {_reason}", pytrace=False)
    pytest.skip(_reason, allow_module_level=True)

from playwright.sync_api import (  # noqa: E402
    Browser,
    BrowserContext,
    Page,
    Playwright,
    sync_playwright,
)


@dataclass
class Stack:
    site: str
    tracker: str
    dead: str
    engine: sa.Engine
    profiles: Path

    def events(self, **where: Any) -> list[dict[str, Any]]:
        """Stored events whose columns, or fields of the event as received, match `where`."""
        query = sa.select(m.events).order_by(m.events.c.received_at)
        with self.engine.connect() as conn:
            rows = [dict(row) for row in conn.execute(query).mappings()]
        return [
            row
            for row in rows
            if all(row.get(k, row["request"].get(k)) == v for k, v in where.items())
        ]

    def event(self, what: str, **where: Any) -> dict[str, Any]:
        """The first stored event matching `where`, waiting for it to arrive."""
        rows: list[dict[str, Any]] = harness.wait_until(lambda: self.events(**where), what)
        return rows[0]


def _settings(database_url: str, origins: list[str]) -> Settings:
    return Settings.model_validate(
        {
            "database_url": database_url,
            "secret_key": SECRET,
            "cookie": {"domain": "example.test", "secure": True, "keeper": True},
            # Every visitor of these tests comes from 127.0.0.1.
            "collect": {"per_address_per_second": 1000, "per_address_burst": 10_000},
            "sources": [
                {"name": "www", "kind": "browser", "write_key": BROWSER_KEY, "origins": origins}
            ],
            "demo": True,
        }
    )


def _app(settings: Settings) -> Any:
    from firstparty.app import create_app

    return create_app(settings, run_worker=False)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("browser")
    tls = harness.certificate(tmp)
    url = f"sqlite:///{tmp / 'firstparty.db'}"
    engine = db.create_engine(url, poolclass=sa.NullPool)
    migrate.upgrade(engine)
    dead_sock = harness.bound_socket()  # held, never listening: a tracker host that is down
    dead = f"https://{harness.TRACKER_HOST}:{dead_sock.getsockname()[1]}"
    tracker_server = harness.ServerThread(None, tls)
    site_server = harness.ServerThread(None, tls)
    site = f"https://{harness.SITE_HOST}:{site_server.port}"
    tracker = f"https://{harness.TRACKER_HOST}:{tracker_server.port}"
    tracker_server.server.config.app = _app(_settings(url, [site, tracker]))
    site_server.server.config.app = harness.site_app(tracker, dead, BROWSER_KEY)
    with tracker_server, site_server:
        yield Stack(site, tracker, dead, engine, tmp / "profiles")
    dead_sock.close()
    engine.dispose()


@pytest.fixture(scope="module")
def pw() -> Iterator[Playwright]:
    with sync_playwright() as playwright:
        yield playwright


HOSTS = f"MAP {harness.SITE_HOST} 127.0.0.1, MAP {harness.TRACKER_HOST} 127.0.0.1"
ARGS = [
    *harness.CHROMIUM_ARGS,
    "--no-proxy-server",
    "--ignore-certificate-errors",
    f"--host-resolver-rules={HOSTS}",
]
Launch = Callable[[Path], BrowserContext]


@pytest.fixture(scope="module")
def browser(pw: Playwright) -> Iterator[Browser]:
    """One Chromium for the module (Playwright gives it a fresh user-data dir)."""
    chromium = pw.chromium.launch(executable_path=harness.CHROMIUM, headless=True, args=ARGS)
    yield chromium
    chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A page in a new, empty browser context: no cookies, no storage."""
    context = browser.new_context(ignore_https_errors=True)
    context.set_default_timeout(15_000)
    yield context.new_page()
    context.close()


@pytest.fixture
def launch(pw: Playwright) -> Iterator[Launch]:
    """Start Chromium on a profile directory; the same directory again is a later visit."""
    opened: list[BrowserContext] = []

    def start(profile: Path) -> BrowserContext:
        context = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=harness.CHROMIUM,
            headless=True,
            ignore_https_errors=True,
            args=ARGS,
        )
        context.set_default_timeout(15_000)
        opened.append(context)
        return context

    yield start
    for context in opened:
        context.close()


def _fp_cookie(context: BrowserContext) -> Any:
    [cookie] = [c for c in context.cookies() if c["name"] == "fp_id"]
    return cookie


def _loaded(page: Page) -> None:
    page.wait_for_function("window.firstparty && window.firstparty.loaded === true")


def test_visitor_cookie_is_httponly_on_the_parent_domain_and_stable(
    stack: Stack, launch: Launch, tmp_path: Path
) -> None:
    profile = tmp_path / "profile"
    context = launch(profile)
    page = context.new_page()
    with page.expect_response(lambda r: "/v1/events" in r.url) as answer:
        page.goto(f"{stack.site}/first")
    assert "fp_id=" in (answer.value.header_value("set-cookie") or "")  # set by the response
    cookie = _fp_cookie(context)
    assert cookie["domain"] == ".example.test"
    assert cookie["httpOnly"] is True and cookie["secure"] is True
    assert cookie["sameSite"] == "Lax"
    assert cookie["expires"] > (datetime.now(UTC) + timedelta(days=399)).timestamp()
    assert "fp_id" not in page.evaluate("document.cookie")
    first = stack.event("the first page event", url=f"{stack.site}/first")

    page.reload()
    harness.wait_until(lambda: len(stack.events(url=f"{stack.site}/first")) == 2, "the reload")
    assert _fp_cookie(context)["value"] == cookie["value"]
    context.close()

    later = launch(profile).new_page()  # the browser restarted on the same profile
    later.goto(f"{stack.site}/later")
    again = stack.event("the later visit", url=f"{stack.site}/later")
    assert _fp_cookie(later.context)["value"] == cookie["value"]
    assert again["visitor_id"] == first["visitor_id"] is not None


def test_click_ids_in_the_landing_url_are_kept(stack: Stack, page: Page) -> None:
    tag = uuid.uuid4().hex[:8]
    landing = f"{stack.site}/land?gclid=G-{tag}&fbclid=F-{tag}&ttclid=T-{tag}&utm_source=ads"
    page.goto(landing)
    visitor = stack.event("the landing page event", url=landing)["visitor_id"]
    query = sa.select(m.click_ids.c.kind, m.click_ids.c.value).where(
        m.click_ids.c.visitor_id == visitor
    )
    with stack.engine.connect() as conn:
        kept = {kind: value for kind, value in conn.execute(query)}
    assert kept == {"gclid": f"G-{tag}", "fbclid": f"F-{tag}", "ttclid": f"T-{tag}"}


def test_track_returns_the_event_id_that_arrives(stack: Stack, page: Page) -> None:
    page.goto(f"{stack.site}/signup")
    _loaded(page)
    event_id = page.evaluate("firstparty.track('Signup', {plan: 'pro', value: 9})")
    row = stack.event("the Signup event", event_id=event_id)
    assert row["name"] == "Signup" and row["type"] == "track"
    assert row["request"]["properties"] == {"plan": "pro", "value": 9}
    assert row["request"]["url"] == f"{stack.site}/signup"
    uuid.UUID(event_id)  # a real UUID from crypto.randomUUID


def test_calls_queued_by_the_stub_before_loading_are_sent(stack: Stack, page: Page) -> None:
    event_id = f"early-{uuid.uuid4()}"
    page.goto(f"{stack.site}/early?early={event_id}")
    assert page.evaluate("window.earlyId") == event_id
    assert stack.event("the queued event", event_id=event_id)["name"] == "Early"


@pytest.mark.parametrize("transport", ["fetch", "sendBeacon"])
def test_an_event_sent_while_the_page_unloads_arrives(
    stack: Stack, page: Page, transport: str
) -> None:
    event_id = f"unload-{transport}-{uuid.uuid4()}"
    nofetch = "&nofetch=1" if transport == "sendBeacon" else ""
    page.goto(f"{stack.site}/leaving?unload={event_id}{nofetch}")
    _loaded(page)
    page.click("#away")
    page.wait_for_url(f"{stack.site}/away")
    assert stack.event("the unload event", event_id=event_id)["name"] == "Unload"


def test_spa_navigation_sends_a_page_event(stack: Stack, page: Page) -> None:
    page.goto(f"{stack.site}/app")
    _loaded(page)
    page.evaluate("document.title = 'Step 2'; history.pushState({}, '', '/app/step2')")
    row = stack.event("the SPA page event", url=f"{stack.site}/app/step2")
    assert row["type"] == "page"
    assert row["request"]["referrer"] == f"{stack.site}/app"
    assert row["request"]["title"] == "Step 2"
    page.evaluate("history.replaceState({}, '', '/app/step2#details')")  # same page: no event
    page.go_back()
    stack.event("the popstate page event", url=f"{stack.site}/app", type="page")
    harness.wait_until(lambda: len(stack.events(url=f"{stack.site}/app")) == 2, "back")
    assert len(stack.events(url=f"{stack.site}/app/step2")) == 1


def test_consent_identify_and_pixel_cookies_travel_with_events(stack: Stack, page: Page) -> None:
    page.goto(f"{stack.site}/consent?pixels=1")
    _loaded(page)
    event_id = page.evaluate(
        """() => {
          firstparty.consent({ad_storage: 'denied', ad_user_data: true, bogus: 'granted'});
          firstparty.identify({email: 'Jane@Example.com', favourite: 'x'});
          return firstparty.track('Consented');
        }"""
    )
    row = stack.event("the Consented event", event_id=event_id)
    assert row["consent"] == {"ad_storage": "denied", "ad_user_data": "granted"}
    assert row["context"]["fbp"] == "fb.1.1700000000000.1234567890"
    assert row["context"]["ga"] == "GA1.1.123456789.1700000000"
    assert "em" in row["user"] or "email" in row["user"]
    identify = stack.event("identify", type="identify", url=f"{stack.site}/consent?pixels=1")
    assert identify["user"]
    page.goto(f"{stack.site}/consent-later")  # consent is remembered across pages
    _loaded(page)
    later = page.evaluate("firstparty.track('Later')")
    assert stack.event("the Later event", event_id=later)["consent"]["ad_storage"] == "denied"


def test_cookie_keeper_extends_pixel_cookies_and_writes_fbc_for_a_new_fbclid(
    stack: Stack, page: Page
) -> None:
    page.goto(f"{stack.site}/keeper?pixels=1&fbclid=IwAR-keeper")
    _loaded(page)
    event_id = page.evaluate("firstparty.track('Kept')")
    stack.event("the Kept event", event_id=event_id)
    year = (datetime.now(UTC) + timedelta(days=300)).timestamp()

    def cookies() -> dict[str, Any]:
        return {c["name"]: c for c in page.context.cookies()}

    harness.wait_until(lambda: cookies()["_fbp"]["expires"] > year, "the keeper's _fbp")
    kept = cookies()
    assert kept["_fbp"]["value"] == "fb.1.1700000000000.1234567890"
    assert kept["_fbp"]["httpOnly"] is False and kept["_fbp"]["domain"] == ".example.test"
    assert kept["_ga"]["expires"] > year
    fbc = kept["_fbc"]["value"]
    assert fbc.startswith("fb.1.") and fbc.endswith(".IwAR-keeper")


def test_a_dead_tracker_host_does_not_break_the_page(stack: Stack, page: Page) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{stack.site}/down?tracker=dead")
    assert page.text_content("#alive") == "page works"
    assert page.evaluate("typeof window.deadId") == "string"  # the stub answered
    page.goto(f"{stack.site}/down2?collector=dead")
    _loaded(page)
    assert page.evaluate("typeof firstparty.track('Lost', {a: 1})") == "string"
    page.evaluate("firstparty.identify('x'); firstparty.consent(null); firstparty.track()")
    assert page.text_content("#alive") == "page works"
    assert errors == []


def test_demo_page_shows_the_whole_flow(stack: Stack, page: Page) -> None:
    page.goto(f"{stack.tracker}/demo/?gclid=demo-gclid-1&fbclid=demo-fbclid-1&utm_source=demo")
    _loaded(page)
    page.wait_for_selector("#feed tr[data-event-id]")
    page.click("button[data-view=pricing]")
    page.click("#lead button[type=submit]")
    lead_id = page.text_content("#lead-result").rsplit(" ", 1)[-1]  # type: ignore[union-attr]
    page.wait_for_selector(f"#feed tr[data-event-id='{lead_id}']")
    page.wait_for_selector("#clicks .pill")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "demo.png"), full_page=True)
    row = stack.event("the demo Lead", event_id=lead_id)
    assert row["name"] == "Lead" and row["user"]


@pytest.mark.parametrize(
    ("viewport", "shot"), [((390, 844), "demo-phone.png"), ((1280, 800), "demo-desktop.png")]
)
def test_the_demo_fits_a_phone_and_a_desktop(
    stack: Stack, browser: Browser, viewport: tuple[int, int], shot: str
) -> None:
    width, height = viewport
    phone = width < 760
    context = browser.new_context(
        ignore_https_errors=True,
        viewport={"width": width, "height": height},
        is_mobile=phone,
        has_touch=phone,
    )
    context.set_default_timeout(15_000)
    page = context.new_page()
    long_campaign = "spring-sale-" * 12  # a long landing URL, as ad links are
    page.goto(
        f"{stack.tracker}/demo/?gclid=demo-gclid-1&fbclid=demo-fbclid-1&ttclid=demo-ttclid-1"
        f"&utm_source=demo&utm_campaign={long_campaign}"
    )
    _loaded(page)
    page.click("#lead button[type=submit]")
    lead_id = page.text_content("#lead-result").rsplit(" ", 1)[-1]  # type: ignore[union-attr]
    page.wait_for_selector(f"#feed tr[data-event-id='{lead_id}']")
    page.wait_for_selector("#clicks .pill")
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    table = page.evaluate("document.getElementById('feed-table').getBoundingClientRect().right")
    assert table <= width
    cards = page.evaluate("getComputedStyle(document.querySelector('#feed-table thead')).display")
    assert (cards == "none") is phone  # a phone reads cards, a desktop the table
    label = page.evaluate(
        "getComputedStyle(document.querySelector('#feed td[data-label]'), '::before').content"
    )
    assert (label == '"received"') is phone
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / shot), full_page=True)
    context.close()


def _requests_to_collector(page: Page) -> list[str]:
    """The order in which requests to the collector start ('sent') and are answered."""
    log: list[str] = []
    page.on("request", lambda r: "/v1/events" in r.url and log.append("sent"))
    page.on("response", lambda r: "/v1/events" in r.url and log.append("answered"))
    return log


def test_a_first_visit_sends_its_first_request_alone_and_mints_one_visitor(
    stack: Stack, page: Page
) -> None:
    event_id = f"first-{uuid.uuid4()}"
    log = _requests_to_collector(page)
    page.goto(f"{stack.site}/first-visit?early={event_id}")  # a queued Lead, then the page view
    early = stack.event("the queued event", event_id=event_id)
    viewed = stack.event(
        "the page view", url=f"{stack.site}/first-visit?early={event_id}", type="page"
    )
    assert early["visitor_id"] == viewed["visitor_id"] is not None
    _pumped(page, lambda: log.count("answered") == 2, "both answers")
    assert log[:2] == ["sent", "answered"]  # the second waited for the first answer
    # Later pages know the visitor exists and send at once.
    assert page.evaluate("localStorage.fp_seen") == "1"


def test_invalid_user_values_are_dropped_and_later_events_still_arrive(
    stack: Stack, page: Page
) -> None:
    page.goto(f"{stack.site}/identify-bad")
    _loaded(page)
    ids = page.evaluate(
        """() => [
          firstparty.identify({phone: 'call me maybe', email: 'nobody', first_name: 'Ann'}),
          firstparty.track('AfterBadIdentify'),
        ]"""
    )
    identify = stack.event("the identify event", event_id=ids[0])
    assert set(identify["request"]["user"]["hashed"]) == {"fn"}
    assert stack.event("the next event", event_id=ids[1])["name"] == "AfterBadIdentify"


def test_a_value_the_server_drops_leaves_the_remembered_user(stack: Stack, page: Page) -> None:
    page.goto(f"{stack.site}/identify-refused")
    _loaded(page)
    # Shaped like a phone, but no real number: only the server can tell.
    first = page.evaluate("firstparty.identify({phone: '+1 000 000', email: 'a@example.com'})")
    identify = stack.event("the identify event", event_id=first)
    assert "ph" not in identify["user"] and "em" in identify["user"]
    later = [page.evaluate(f"firstparty.track('Later{i}')") for i in range(3)]
    for event_id in later:
        row = stack.event("a later event", event_id=event_id)
        assert "ph" not in row["user"] and "em" in row["user"]
        assert "phone" not in row["request"].get("user", {}).get("hashed", {})


def test_the_page_event_id_is_given_to_the_page(stack: Stack, page: Page) -> None:
    page.goto(f"{stack.site}/pixel")
    _loaded(page)
    page.wait_for_function("window.heard.length === 1")
    page_id = page.evaluate("firstparty.pageEventId")
    assert page.evaluate("window.heard") == [page_id]
    assert stack.event("the page event", event_id=page_id)["type"] == "page"
    page.evaluate("history.pushState({}, '', '/pixel/2')")  # an SPA page view: a new id
    page.wait_for_function("window.heard.length === 2")
    assert page.evaluate("window.heard[1] === firstparty.pageEventId && heard[0] !== heard[1]")


def test_ga4_session_cookies_are_sent_per_container(stack: Stack, page: Page) -> None:
    page.goto(f"{stack.site}/ga-session?ga=1")
    _loaded(page)
    event_id = page.evaluate("firstparty.track('WithSession')")
    row = stack.event("the event", event_id=event_id)
    assert row["context"]["ga_session"] == "ABC123XYZ:1767225000:3,OLD1:1767000000:9"


def _pumped(page: Page, found: Callable[[], Any], what: str) -> Any:
    """wait_until for code that needs Playwright's handlers: they run while it waits."""
    return harness.wait_until(lambda: page.wait_for_timeout(50) or found(), what)


def test_an_event_refused_for_a_user_field_goes_again_without_it(stack: Stack, page: Page) -> None:
    refused: list[str] = []

    def collector(route: Any) -> None:
        body = route.request.post_data_json or {}
        if "phone" in (body.get("user") or {}):  # an older server: 422 for the whole event
            refused.append(body["event_id"])
            route.fulfill(
                status=422,
                json={
                    "error": "validation failed",
                    "details": [{"field": "user.phone", "message": "is not a phone number"}],
                },
                headers={
                    "Access-Control-Allow-Origin": stack.site,
                    "Access-Control-Allow-Credentials": "true",
                },
            )
        else:
            route.continue_()

    page.goto(f"{stack.site}/refused")
    _loaded(page)
    page.route("**/v1/events*", collector)
    first = page.evaluate("firstparty.identify({phone: '+1 617 555 0100', email: 'a@b.example'})")
    [row] = _pumped(page, lambda: stack.events(event_id=first), "the event sent again")
    assert refused == [first]
    assert "em" in row["user"] and "ph" not in row["user"]
    later = page.evaluate("firstparty.track('AfterRefusal')")
    [after] = _pumped(page, lambda: stack.events(event_id=later), "the next event")
    assert "ph" not in after["user"]
    assert refused == [first]  # the phone was forgotten: not sent again


def _refusal(stack: Stack, status: int, retry_after: str = "1") -> dict[str, Any]:
    """What the server answers a page when it says "later" (the CORS headers of a real 429)."""
    return {
        "status": status,
        "json": {"error": "rate limited: too many requests from this address"},
        "headers": {
            "Retry-After": retry_after,
            "Access-Control-Allow-Origin": stack.site,
            "Access-Control-Allow-Credentials": "true",
            "Access-Control-Expose-Headers": "Retry-After",
        },
    }


def _attempts(page: Page, refuse: Callable[[str, int], dict[str, Any] | None]) -> list[str]:
    """Route the collector: `refuse(event_id, its attempt number)` answers instead of the server
    when it returns an answer, else the request goes on. Returns the event ids as they came."""
    seen: list[str] = []

    def collector(route: Any) -> None:
        event_id = (route.request.post_data_json or {}).get("event_id", "")
        seen.append(event_id)
        answer = refuse(event_id, seen.count(event_id))
        route.fulfill(**answer) if answer else route.continue_()

    page.route("**/v1/events*", collector)
    return seen


def test_a_429_is_sent_again_after_retry_after_and_lands_once(stack: Stack, page: Page) -> None:
    page.goto(f"{stack.site}/retry")
    _loaded(page)
    event_id = f"retried-{uuid.uuid4()}"
    seen = _attempts(page, lambda e, n: _refusal(stack, 429) if e == event_id and n == 1 else None)
    page.evaluate(f"firstparty.track('Retried', {{plan: 'pro'}}, {{event_id: '{event_id}'}})")
    [row] = _pumped(page, lambda: stack.events(event_id=event_id), "the event sent again")
    assert seen.count(event_id) == 2  # refused once, then accepted: the same event_id
    assert row["name"] == "Retried" and row["request"]["properties"] == {"plan": "pro"}
    later = page.evaluate("firstparty.track('After')")
    _pumped(page, lambda: stack.events(event_id=later), "the next event")
    assert len(stack.events(event_id=event_id)) == 1 and seen.count(event_id) == 2


def test_a_retry_of_an_event_that_did_land_is_deduplicated(stack: Stack, page: Page) -> None:
    """The server stored the event but the page got a 503 (a proxy's, say): the retry is
    acknowledged as a duplicate and stored once."""
    page.goto(f"{stack.site}/retry-landed")
    _loaded(page)
    answers: list[Any] = []

    def answered(response: Any) -> None:
        # The Landed event's answers only: the page view sent on load may be answered after
        # this listener is added (CI saw its 202 end the wait below before Landed was sent).
        body = (response.request.post_data_json or {}) if "/v1/events" in response.url else {}
        if body.get("name") == "Landed":
            answers.append(response)

    page.on("response", answered)
    landed: list[int] = []

    def collector(route: Any) -> None:
        body = route.request.post_data_json or {}
        if body.get("name") == "Landed" and not landed:
            # Playwright's own fetch does not use Chromium's host mapping: the address, then.
            direct = route.request.url.replace(harness.TRACKER_HOST, "127.0.0.1")
            landed.append(route.fetch(url=direct).status)  # the server stores it...
            route.fulfill(**_refusal(stack, 503))  # ...and the page hears "later"
        else:
            route.continue_()

    page.route("**/v1/events*", collector)
    event_id = page.evaluate("firstparty.track('Landed')")
    _pumped(page, lambda: [a for a in answers if a.status == 202], "the retry's answer")
    assert landed == [202] and [a.status for a in answers] == [503, 202]
    assert answers[1].json()["duplicate"] is True
    assert len(stack.events(event_id=event_id)) == 1


# Counts the collector's answers the page has read (the tracker's own handlers run right after).
COUNT_ANSWERS = """
  window.answered = 0;
  const fetched = window.fetch;
  window.fetch = function () {
    return fetched.apply(this, arguments).then((r) => (answered++, r));
  };
"""


def _stopped(page: Page) -> None:
    """Stop the page's clock (installed by Playwright): its timers run only when told to."""
    page.clock.pause_at(datetime.now(UTC) + timedelta(milliseconds=100))


def _answered(page: Page, count: int) -> None:
    """Wait until the page has read `count` answers of the collector (the page's own timers are
    Playwright's fake clock: evaluated from here, not polled in the page)."""
    _pumped(page, lambda: page.evaluate("window.answered") >= count, f"{count} answers")
    assert page.evaluate("window.answered") == count


def test_retries_are_bounded_per_event_and_in_number_of_events(stack: Stack, page: Page) -> None:
    """3 tries an event, 20 events held at most (the oldest dropped); the page's clock is
    Playwright's, so every Retry-After passes exactly when the test says."""
    page.clock.install()
    page.add_init_script(COUNT_ANSWERS)
    page.goto(f"{stack.site}/retry-bounds")
    _loaded(page)
    _stopped(page)
    _answered(page, 1)  # the page view
    seen = _attempts(page, lambda e, n: _refusal(stack, 429) if e.startswith("b-") else None)
    ids = [f"b-{i}-{uuid.uuid4()}" for i in range(25)]
    for event_id in ids:
        page.evaluate(f"firstparty.track('Bounded', {{}}, {{event_id: '{event_id}'}})")
    _answered(page, 26)
    page.clock.run_for(1000)  # Retry-After: 1
    _answered(page, 46)
    page.clock.run_for(1000)
    _answered(page, 66)
    page.clock.run_for(60_000)  # nothing more is due: a later event is the next request
    last = page.evaluate("firstparty.track('AfterBounded')")
    _pumped(page, lambda: stack.events(event_id=last), "the next event")
    assert seen[-1] == last
    assert [seen.count(event_id) for event_id in ids] == [1] * 5 + [3] * 20
    assert stack.events(name="Bounded") == []


def test_an_event_held_for_later_is_sent_when_the_page_leaves(stack: Stack, page: Page) -> None:
    page.clock.install()
    page.add_init_script(COUNT_ANSWERS)
    page.goto(f"{stack.site}/leaving-held")
    _loaded(page)
    _stopped(page)  # the Retry-After never passes
    event_id = f"held-{uuid.uuid4()}"
    seen = _attempts(page, lambda e, n: _refusal(stack, 503, "30") if e == event_id else None)
    page.evaluate(f"firstparty.track('Held', {{}}, {{event_id: '{event_id}'}})")
    _answered(page, 2)
    page.click("#away")
    page.wait_for_url(f"{stack.site}/away")
    # Refused once through the route; the send at pagehide (a keepalive request of a page
    # that is gone, which Playwright's routing does not see) is the one that landed.
    assert seen.count(event_id) == 1
    assert stack.event("the held event", event_id=event_id)["name"] == "Held"
