"""The hourly rollups the reports read agree with a direct count over the stored events: after
ingest (single and batch, people and robots, campaigns and click ids), after delivery, and
after a privacy erase; and the admin lists page by id, every row exactly once."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

import httpx
import sqlalchemy as sa

from firstparty import platforms
from firstparty.delivery import outbox, tally
from firstparty.reports import rollups, summary
from firstparty.store.models import (
    deliveries,
    delivery_rollups,
    event_rollups,
    events,
    visitors,
)
from tests import factories
from tests.conftest import BROWSER_KEY, BROWSER_UA, SERVER_KEY, AppClient, running_app, settings_for
from tests.e2e.journey import all_settled

SITE = "https://www.example.test"
ADMIN = {"Authorization": "Bearer admin-token-for-tests"}
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
CAMPAIGN = f"{SITE}/?utm_source=news&utm_medium=email&utm_campaign=spring&gclid=G1&fbclid=F1"
Row = tuple[str, str, str, bool, bool, str, str]


def _event(event_id: str, name: str = "Lead", url: str = f"{SITE}/a") -> dict[str, Any]:
    return {"type": "track", "name": name, "event_id": event_id, "url": url}


async def _send(
    app: AppClient, batch: list[dict[str, Any]], *, key: str = BROWSER_KEY, agent: str = BROWSER_UA
) -> list[dict[str, Any]]:
    headers = {"X-Write-Key": key, "Origin": SITE, "User-Agent": agent}
    transport = httpx.ASGITransport(app=app.app, client=("198.51.100.20", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="https://t.example.test") as http:
        answer = await http.post("/v1/batch", json={"events": batch}, headers=headers)
    assert answer.status_code in (200, 202), answer.text
    results: list[dict[str, Any]] = answer.json()["results"]
    return results


def _direct(app: AppClient) -> Counter[Row]:
    """Every stored event counted as the rollups should, from events, visitors and the outbox."""
    converted = rollups.converted_column()
    query = sa.select(
        events.c.occurred_at,
        events.c.source,
        events.c.name,
        events.c.bot,
        converted.label("converted"),
        visitors.c.first_touch,
    ).select_from(events.outerjoin(visitors, visitors.c.id == events.c.visitor_id))
    counts: Counter[Row] = Counter()
    with app.engine.connect() as conn:
        for r in conn.execute(query):
            touch = r.first_touch or {}
            clicks = touch.get("click_ids") or {}
            kinds = ",".join(k for k in platforms.CLICK_IDS if k in clicks)
            utm = (touch.get("utm") or {}).get("utm_source") or ""
            hour = rollups.hour(r.occurred_at).isoformat()
            counts[(hour, r.source, r.name, r.bot is not None, bool(r.converted), utm, kinds)] += 1
    return counts


def _rolled(app: AppClient) -> Counter[Row]:
    counts: Counter[Row] = Counter()
    for r in app.rows(event_rollups):
        key = (r["hour"].isoformat(), r["source"], r["name"], bool(r["bot"]), bool(r["converted"]))
        counts[(*key, r["utm_source"], r["click_kinds"])] += int(r["count"])
    return +counts  # rows taken down to zero by an erase count for nothing


async def _ingest(app: AppClient) -> None:
    first = await _send(app, [_event("c1", "PageView", CAMPAIGN), _event("c2")])
    cookie = {"visitor_id": first[0]["visitor_id"]}
    await _send(app, [_event(f"b{i}", "Lead") for i in range(3)], agent=GOOGLEBOT)
    await _send(app, [_event(f"p{i}", "Purchase") | {"properties": {"value": 5}} for i in range(4)])
    await _send(app, [_event("again", "Lead") | cookie, _event("c2")])  # c2: a duplicate
    server = [_event(f"s{i}", "Lead") | {"user_id": f"u{i % 2}"} for i in range(5)]
    await _send(app, server, key=SERVER_KEY)


async def test_rollups_equal_a_direct_count_after_ingest_delivery_and_erase(
    database_url: str,
) -> None:
    settings = settings_for(database_url, destinations=[factories.META_CAPI | {"dry_run": True}])
    async with running_app(settings, run_worker=True) as app:
        await _ingest(app)
        direct = _direct(app)
        assert sum(direct.values()) == 15 and any(row[3] for row in direct)  # robots among them
        assert any(row[4] for row in direct) and ("news" in {row[5] for row in direct})
        assert _rolled(app) == direct

        by_source = summary.conversions_by_utm_source(app.engine, include_bots=True)
        expected = Counter[str]()
        for row, n in direct.items():
            if row[4]:
                expected[row[5] or summary.NONE] += n
        assert {b.label: b.count for b in by_source} == dict(expected)

        await all_settled(app.engine)  # outcomes change; conversions and counts do not
        assert _rolled(app) == direct
        statuses = Counter(r["status"] for r in app.rows(deliveries))
        [rate] = summary.delivery_rates(app.engine)
        assert rate.statuses == dict(statuses) and rate.waiting == 0
        assert _tallied(app) == _outbox(app)

        erased = await app.http.post(
            "/v1/admin/privacy/erase", json={"visitor_id": cookie_of(app)}, headers=ADMIN
        )
        assert erased.status_code == 200, erased.text
        assert _rolled(app) == _direct(app) != direct
        assert _tallied(app) == _outbox(app)


def _outbox(app: AppClient) -> Counter[tuple[str, str, str, str]]:
    rows = app.rows(deliveries)
    return Counter(
        (tally.hour(r["created_at"]).isoformat(), r["destination"], r["status"], r["source"])
        for r in rows
    )


def _tallied(app: AppClient) -> Counter[tuple[str, str, str, str]]:
    counts: Counter[tuple[str, str, str, str]] = Counter()
    for r in app.rows(delivery_rollups):
        place = (r["hour"].isoformat(), r["destination"], r["status"], r["source"])
        counts[place] += int(r["count"])
    return +counts


async def test_the_outbox_tally_follows_every_status_change(database_url: str) -> None:
    settings = settings_for(database_url, destinations=[factories.META_CAPI | {"dry_run": True}])
    async with running_app(settings) as app:  # worker off: the outbox is driven by hand
        await _ingest(app)
        engine, now = app.engine, datetime.now(UTC)
        assert _tallied(app) == _outbox(app) and _outbox(app)
        claims = outbox.claim(engine, destinations={"meta"}, now=now, lease_seconds=60, limit=5)
        assert len(claims) == 5 and _tallied(app) == _outbox(app)
        failed = [outbox.Finish(c, outbox.DeliveryStatus.FAILED, now, "refused") for c in claims]
        stale = outbox.Finish(claims[0], outbox.DeliveryStatus.DELIVERED, now)  # no longer ours
        with engine.begin() as conn:
            outbox.finish(conn, failed[:3], now)
        with engine.begin() as conn:
            outbox.finish(conn, [stale], now)
        assert Counter(r["status"] for r in app.rows(deliveries))["failed"] == 3
        assert _tallied(app) == _outbox(app)
        outbox.release(engine, claims[3:], now=now)
        assert _tallied(app) == _outbox(app)
        with engine.begin() as conn:
            outbox.requeue(conn, [c.id for c in claims], now)
        assert _tallied(app) == _outbox(app)
        assert {r["status"] for r in app.rows(deliveries)} == {"pending"}


def cookie_of(app: AppClient) -> str:
    """The visitor who landed from the campaign."""
    with app.engine.connect() as conn:
        query = sa.select(events.c.visitor_id).where(events.c.event_id == "c1")
        return str(conn.execute(query).scalar_one())


async def test_backfill_counts_what_was_stored_before_the_rollups(database_url: str) -> None:
    async with running_app(settings_for(database_url)) as app:
        await _ingest(app)
        with app.engine.begin() as conn:
            conn.execute(sa.delete(event_rollups))
            rollups.backfill(conn)
        assert _rolled(app) == _direct(app)


async def test_event_pages_return_every_row_once_with_ties_on_time(database_url: str) -> None:
    async with running_app(settings_for(database_url)) as app:
        at = "2026-11-20T10:00:00Z"  # one time for all: the id breaks the tie
        batch = [_event(f"t{i}") | {"timestamp": at, "user_id": "u"} for i in range(23)]
        await _send(app, batch, key=SERVER_KEY)
        seen: list[str] = []
        cursor = ""
        for _ in range(10):
            page = await app.http.get(f"/v1/admin/events?limit=5{cursor}", headers=ADMIN)
            assert page.status_code == 200, page.text
            body = page.json()
            seen += [item["event_id"] for item in body["items"]]
            if not body.get("next_cursor"):
                break
            cursor = f"&cursor={body['next_cursor']}"
        assert sorted(seen) == sorted(f"t{i}" for i in range(23))
        assert len(seen) == len(set(seen))
