"""Robots: known crawlers, headless browsers and HTTP libraries are flagged on the event
(`events.bot`), kept out of ad platforms unless a destination sets `forward_bots`, dropped where a
source says `bots = "drop"`, and left out of the reports unless asked for."""

from __future__ import annotations

import random
import re
import string
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from crawlerdetect import CrawlerDetect
from crawlerdetect.providers import crawlers

from firstparty import metrics
from firstparty.collect import bots
from firstparty.delivery import replay
from firstparty.destinations import registry
from firstparty.destinations.base import event_json
from firstparty.reports import summary
from firstparty.store.models import events, visitors
from tests import factories
from tests.conftest import BROWSER_KEY, BROWSER_UA, SERVER_KEY, AppClient, running_app, settings_for
from tests.delivery.outbox import set_status
from tests.e2e.journey import all_settled, outcomes
from tests.fakes import meta as fake_meta
from tests.web.test_admin_ui import signed_in_page

SITE = "https://www.example.test"
FAST = {"backoff_base_seconds": 0.01, "backoff_max_seconds": 0.05, "sweep_interval_seconds": 0.1}
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
HEADLESS = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/131.0.0.0 Safari/537.36"
)
PEOPLE = [
    BROWSER_UA,  # Chrome on Windows
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
    # In-app browsers: people, though their User-Agent names an app.
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/470.0.0.38.109;FBBV/1;FBDV/iPhone15,2;FBMD/iPhone]",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.6778.39 Mobile Safari/537.36 Instagram 356.0.0.41.101 Android",
]


# ---------------------------------------------------------------- the verdict


@pytest.mark.parametrize("user_agent", PEOPLE)
def test_real_browsers_are_people(user_agent: str) -> None:
    assert bots.verdict("browser", user_agent) is None
    assert bots.verdict("server", user_agent) is None


@pytest.mark.parametrize(
    ("user_agent", "reason"),
    [
        (GOOGLEBOT, "crawler"),
        ("Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", "crawler"),
        ("facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)", "crawler"),
        ("Mozilla/5.0 (compatible; GPTBot/1.2; +https://openai.com/gptbot)", "crawler"),
        (HEADLESS, "headless"),
        ("Mozilla/5.0 (Unknown; Linux x86_64) AppleWebKit/538.1 PhantomJS/2.1.1", "headless"),
        ("Mozilla/5.0 (Linux; Android 11) Chrome/119.0 Mobile Chrome-Lighthouse", "headless"),
    ],
)  # fmt: skip
def test_crawlers_and_headless_browsers_are_flagged_from_any_source(
    user_agent: str, reason: str
) -> None:
    assert bots.verdict("browser", user_agent) == reason
    assert bots.verdict("server", user_agent) == reason  # a server's context.user_agent


@pytest.mark.parametrize(
    "user_agent",
    [
        "curl/8.5.0",
        "python-requests/2.32.3",
        "python-httpx/0.28.1",
        "Python/3.11 aiohttp/3.11.9",
        "Go-http-client/2.0",
        "Wget/1.21.4",
        "node-fetch/1.0 (+https://github.com/bitinn/node-fetch)",
    ],
)
def test_an_http_library_is_a_robot_in_a_browser_source_only(user_agent: str) -> None:
    assert bots.verdict("browser", user_agent) == "http_library"
    # A server source may state its own client as the person's: not a judgement on them.
    assert bots.verdict("server", user_agent) is None


def test_no_user_agent_is_a_robot_in_a_browser_source_only() -> None:
    assert bots.verdict("browser", None) == "no_user_agent"
    assert bots.verdict("browser", "  ") == "no_user_agent"
    assert bots.verdict("server", None) is None


def test_crawlers_are_crawlerdetects_own_verdicts() -> None:
    """The patterns run on RE2 (linear time) answer as crawlerdetect's matcher does: probed with
    each pattern's literal text, alone and inside a browser-like string, and random strings."""
    probes = [PEOPLE[0], "YandexBot/3.0", "YandexSearch/1.0", "Mozilla/5.0"]
    for pattern in crawlers.data:
        text = re.sub(r"[\\^$()\[\]?*+.{}|]", "", pattern)
        probes += [text, f"Mozilla/5.0 (compatible; {text}/1.0)"]
    draw = random.Random(12)
    alphabet = string.ascii_letters + " /;()."
    probes += ["".join(draw.choices(alphabet, k=80)) for _ in range(200)]
    reference = CrawlerDetect()
    agree = [bots._is_crawler(p.strip()) == reference.is_crawler(p) for p in probes if p.strip()]
    assert all(agree)
    assert sum(bots._is_crawler(p) for p in probes) > len(crawlers.data)  # most probes are bots


def test_verdicts_are_remembered_per_user_agent_in_a_bounded_cache() -> None:
    agent = BROWSER_UA + " " + uuid.uuid4().hex  # unseen before
    before = bots._judged.cache_info()
    assert bots.verdict("browser", agent) is None and bots.verdict("server", agent) is None
    after = bots._judged.cache_info()
    assert (after.misses - before.misses, after.hits - before.hits) == (1, 1)
    assert after.maxsize == bots.CACHE_SIZE
    long = "x" * (bots.JUDGED_LENGTH * 4)  # only the leading characters are judged and kept
    bots.verdict("browser", long)
    assert bots._judged("x" * bots.JUDGED_LENGTH) is None


# ---------------------------------------------------------------- settings


def test_ad_platforms_take_no_robots_by_default_and_the_webhook_does() -> None:
    hook = {"name": "h", "type": "webhook", "url": "https://h.example/x", "secret": "s" * 16}
    built = registry.adapters(registry.parse_all([factories.META_CAPI, factories.GA4_MP, hook]))
    meta, ga4, webhook = built["meta"], built["ga4"], built["h"]
    assert meta.wants("track", "Lead") and not meta.wants("track", "Lead", bot=True)
    assert not ga4.wants("track", "Lead", bot=True)
    assert webhook.wants("track", "Lead", bot=True)
    forwarding = registry.adapter_for(
        registry.parse(factories.META_CAPI | {"forward_bots": True}, 0)
    )
    assert forwarding.wants("track", "Lead", bot=True)
    # The webhook's body says what the event is: "bot" is null for a person.
    event = factories.event()
    assert event_json(event)["bot"] is None


def test_a_source_says_flag_or_drop_and_nothing_else(sqlite_url: str) -> None:
    settings = settings_for(sqlite_url)
    assert settings.collect.bots == "flag" and settings.sources[0].bots is None
    with pytest.raises(Exception, match="flag"):
        settings_for(sqlite_url, collect={"bots": "ignore"})


# ---------------------------------------------------------------- through the app


def _stored(app: AppClient) -> dict[str, str | None]:
    """event_id -> its bot flag."""
    with app.engine.connect() as conn:
        rows = conn.execute(sa.select(events.c.event_id, events.c.bot)).all()
    return {row.event_id: row.bot for row in rows}


def _lead(event_id: str, **extra: Any) -> dict[str, Any]:
    return {"type": "track", "name": "Lead", "event_id": event_id, "url": f"{SITE}/a", **extra}


async def _browser_send(
    app: AppClient, event: dict[str, Any], user_agent: str | None, path: str = "/v1/events"
) -> httpx.Response:
    headers = {"X-Write-Key": BROWSER_KEY, "Origin": SITE}
    transport = httpx.ASGITransport(app=app.app, client=("198.51.100.20", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="https://t.example.test") as http:
        if user_agent is None:
            del http.headers["User-Agent"]
        else:
            http.headers["User-Agent"] = user_agent
        body = {"events": [event]} if path == "/v1/batch" else event
        return await http.post(path, json=body, headers=headers)


@pytest.fixture
def meta() -> Iterator[fake_meta.FakeMeta]:
    with fake_meta.FakeMeta() as fake:
        yield fake


async def test_robots_are_stored_flagged_and_sent_only_where_forward_bots(
    database_url: str, meta: fake_meta.FakeMeta
) -> None:
    """A crawler's Lead is kept with its reason, not sent to Meta, sent to the Meta destination
    that forwards robots; a Chrome visitor's Lead goes to both; a server event is judged by the
    user agent it states."""
    destinations = [
        factories.META_CAPI | {"api_base": meta.api_base},
        factories.META_CAPI
        | {"name": "meta-bots", "api_base": meta.api_base, "forward_bots": True},
    ]
    settings = settings_for(database_url, destinations=destinations, delivery=FAST)
    async with running_app(settings, run_worker=True) as app:
        for event_id, agent in (("crawler", GOOGLEBOT), ("person", BROWSER_UA)):
            answer = await _browser_send(app, _lead(event_id), agent)
            assert answer.status_code == 202, answer.text
            assert "dropped" not in answer.json()
        server = {"X-Write-Key": SERVER_KEY}
        for event_id, context in (
            ("server-headless", {"ip": "203.0.113.5", "user_agent": HEADLESS}),
            ("server-person", {"ip": "203.0.113.6"}),  # no user agent: not a robot
        ):
            answer = await app.http.post(
                "/v1/events", json=_lead(event_id, context=context), headers=server
            )
            assert answer.status_code == 202, answer.text
        await all_settled(app.engine, count=6)
        stored, sent = _stored(app), outcomes(app.engine)

    assert stored == {
        "crawler": "crawler",
        "person": None,
        "server-headless": "headless",
        "server-person": None,
    }
    assert {key: status for key, (status, _) in sent.items()} == {
        ("crawler", "meta-bots"): "delivered",
        ("person", "meta"): "delivered",
        ("person", "meta-bots"): "delivered",
        ("server-headless", "meta-bots"): "delivered",
        ("server-person", "meta"): "delivered",
        ("server-person", "meta-bots"): "delivered",
    }
    received = sorted(e["event_id"] for e in meta.events)
    assert received == sorted(
        ["crawler", "person", "person", "server-headless", "server-person", "server-person"]
    )


@pytest.mark.parametrize("path", ["/v1/events", "/v1/batch"])
async def test_a_source_that_drops_robots_answers_202_and_stores_nothing(
    database_url: str, path: str
) -> None:
    sources = settings_for(database_url).model_dump(mode="json")["sources"]
    sources[0] |= {"write_key": BROWSER_KEY, "bots": "drop"}
    sources[1] |= {"write_key": SERVER_KEY}
    settings = settings_for(database_url, sources=sources)
    counted = {"source": "www", "reason": "headless", "action": "dropped"}
    before = metrics.REGISTRY.get_sample_value("firstparty_ingest_bots_total", counted) or 0.0
    async with running_app(settings) as app:
        dropped = await _browser_send(app, _lead("headless"), HEADLESS, path)
        no_agent = await _browser_send(app, _lead("no-agent"), None, path)
        kept = await _browser_send(app, _lead("person"), BROWSER_UA, path)
        stored, people = _stored(app), app.rows(visitors)

    for answer in (dropped, no_agent, kept):
        assert answer.status_code in (200, 202, 207), answer.text
    first = (lambda a: a.json()["results"][0]) if path == "/v1/batch" else (lambda a: a.json())
    assert first(dropped)["ok"] is True and first(dropped)["dropped"] == "bot"
    assert first(no_agent)["dropped"] == "bot"
    assert "dropped" not in first(kept)
    assert stored == {"person": None}
    assert metrics.REGISTRY.get_sample_value("firstparty_ingest_bots_total", counted) == before + 1
    assert [v["id"] for v in people] == [first(kept)["visitor_id"]]


async def test_reports_leave_robots_out_unless_asked(database_url: str) -> None:
    # Worker off: the outbox rows ingest writes are the conversions (robots' too, here).
    destinations = [factories.META_CAPI | {"forward_bots": True}]
    async with running_app(settings_for(database_url, destinations=destinations)) as app:
        for event_id, agent in (("crawler", GOOGLEBOT), ("a", BROWSER_UA), ("b", BROWSER_UA)):
            answer = await _browser_send(app, _lead(event_id), agent)
            assert answer.status_code == 202, answer.text
        admin = {"Authorization": "Bearer admin-token-for-tests"}
        listed = (await app.http.get("/v1/admin/events", headers=admin)).json()["items"]
        excluded = await signed_in_page(app.http, "/admin/reports")
        included = await signed_in_page(app.http, "/admin/reports?bots=include")
        engine = app.engine

        def leads(report: summary.EventsPerDay) -> int:
            column = report.names.index("Lead")
            return sum(counts[column] for _, counts in report.days)

        assert leads(summary.events_per_day(engine)) == 2
        assert leads(summary.events_per_day(engine, include_bots=True)) == 3
        assert summary.conversions_by_utm_source(engine) == [summary.Bucket(summary.NONE, 2)]
        with_bots = summary.conversions_by_utm_source(engine, include_bots=True)
        assert with_bots == [summary.Bucket(summary.NONE, 3)]
        by_click = summary.conversions_by_click_kind(engine, include_bots=True)
        assert by_click == [summary.Bucket(summary.NONE, 3)]

    assert {e["event_id"]: e["bot"] for e in listed} == {"crawler": "crawler", "a": None, "b": None}
    assert "include them" in excluded and "leave them out" in included
    # The events-per-day table (the delivery tables count what was queued, robots' included).
    per_day = [
        page.split('id="per-day"', 1)[1].split("</table>", 1)[0] for page in (excluded, included)
    ]
    assert ">2</td></tr>" in per_day[0] and ">3</td></tr>" not in per_day[0]
    assert ">3</td></tr>" in per_day[1]


async def test_replay_follows_the_destinations_current_forward_bots(sqlite_url: str) -> None:
    """A robot's failed work is sent again only while its destination still forwards robots."""
    forwarding = [factories.META_CAPI | {"forward_bots": True}]
    async with running_app(settings_for(sqlite_url, destinations=forwarding)) as app:
        answer = await _browser_send(app, _lead("crawler"), GOOGLEBOT)
        assert answer.status_code == 202, answer.text
        with app.engine.begin() as conn:
            set_status(conn, "failed", last_error="400")
    for destinations, requeued, skipped in (
        (
            [factories.META_CAPI],
            0,
            {"destination meta does not forward robots' events (crawler)": 1},
        ),
        (forwarding, 1, {}),
    ):
        settings = settings_for(sqlite_url, destinations=destinations)
        adapters = registry.adapters(settings.destinations)
        engine = app.engine
        result = replay.replay(engine, settings=settings, adapters=adapters)
        assert (result.requeued, result.skipped) == (requeued, skipped)
