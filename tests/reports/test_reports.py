"""The reports through the real app on SQLite and PostgreSQL: what counts as a conversion,
local days in the viewer's time zone across midnight, the source filter."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from firstparty.reports import period, summary
from firstparty.store import models as m
from tests import factories
from tests.conftest import (
    BROWSER_KEY,
    SERVER_KEY,
    AppClient,
    make_database,
    running_app,
    settings_for,
)
from tests.web.test_admin_ui import sign_in

SITE = "https://www.example.test"
# Three days ago, so server events may carry these times (they accept up to 90 days back).
DAY = datetime.now(UTC).date() - timedelta(days=3)


@pytest.fixture(params=["sqlite", "postgresql"])
def report_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from make_database(str(request.param), tmp_path, migrated=True)


@pytest.fixture
async def app(report_db: str) -> AsyncIterator[AppClient]:
    destinations = [factories.META_CAPI | {"dry_run": True}, factories.FORWARDERS["webhook"]]
    async with running_app(settings_for(report_db, destinations=destinations)) as client:
        yield client


def at(day: date, hour: int, minute: int = 0) -> str:
    return datetime.combine(day, time(hour, minute), tzinfo=UTC).isoformat()


async def send(app: AppClient, event_id: str, name: str, when: str, key: str = SERVER_KEY) -> None:
    body: dict[str, Any] = {"type": "track", "name": name, "event_id": event_id, "timestamp": when}
    if name == "page":
        body = {"type": "page", "url": f"{SITE}/", "event_id": event_id, "timestamp": when}
    headers = {"X-Write-Key": key, "Origin": SITE}
    if key == SERVER_KEY:
        body["user_id"] = "u1"
    answer = await app.http.post("/v1/events", json=body, headers=headers)
    assert answer.status_code == 202, answer.text


def custom(tz: str, source: str | None = None) -> period.Period:
    query = {
        "from": (DAY - timedelta(days=1)).isoformat(),
        "to": (DAY + timedelta(days=1)).isoformat(),
    }
    return period.parse(
        query | {"tz": tz, "source": source or ""}, default_zone="UTC", now=datetime.now(UTC)
    )


async def test_a_conversion_is_what_a_destination_maps_to_one(app: AppClient) -> None:
    await send(app, "p1", "page", at(DAY, 12))  # Meta PageView and the webhook: no conversion
    await send(app, "b1", "Purchase", at(DAY, 12))  # Meta Purchase: a conversion
    await send(app, "c1", "AddToCart", at(DAY, 12))  # the webhook only, not a conversion kind
    await send(app, "x1", "Clicked", at(DAY, 12))  # the webhook forwards it: no conversion
    [_, middle, _] = summary.totals_per_day(app.engine, period=custom("UTC"))
    assert (middle.day, middle.events, middle.conversions) == (DAY, 4, 1)
    by_source = summary.conversions_by_utm_source(app.engine, period=custom("UTC"))
    assert by_source == [summary.Bucket(summary.NONE, 1)]


async def test_local_days_across_midnight(app: AppClient) -> None:
    await send(app, "late", "Lead", at(DAY, 23, 30))  # 00:30 next day in Paris (+1 in winter)
    await send(app, "eve", "Lead", at(DAY, 22, 30))  # 23:30 in Paris, the same day
    await send(app, "early", "Lead", at(DAY, 3, 30))  # 22:30 the day before in New York (-5)

    def per_day(tz: str) -> list[tuple[date, int, int]]:
        return [
            (t.day, t.events, t.conversions)
            for t in summary.totals_per_day(app.engine, period=custom(tz))
        ]

    before, after = DAY - timedelta(days=1), DAY + timedelta(days=1)
    offset = datetime.combine(DAY, time(12), tzinfo=UTC).astimezone(period.zone("Europe/Paris"))
    if offset.utcoffset() == timedelta(hours=1):  # the test's day is in Paris winter time
        assert per_day("Europe/Paris") == [(before, 0, 0), (DAY, 2, 2), (after, 1, 1)]
    assert per_day("UTC") == [(before, 0, 0), (DAY, 3, 3), (after, 0, 0)]
    assert per_day("Asia/Tokyo")[1:] == [(DAY, 1, 1), (after, 2, 2)]  # +9: 03:30 is 12:30
    names = summary.events_per_day(app.engine, period=custom("America/Los_Angeles"))
    assert names.names == ["Lead"] and [c for _, c in names.days] == [[1], [2], [0]]


async def test_the_source_filter(app: AppClient) -> None:
    await send(app, "w1", "Purchase", at(datetime.now(UTC).date(), 0), key=BROWSER_KEY)
    await send(app, "s1", "Purchase", at(DAY, 12))
    everything = summary.totals_per_day(app.engine, period=custom("UTC"))
    web = summary.totals_per_day(app.engine, period=custom("UTC", "www"))
    crm = summary.totals_per_day(app.engine, period=custom("UTC", "crm"))
    assert sum(t.events for t in everything) == 1 and sum(t.events for t in crm) == 1
    assert sum(t.events for t in web) == 0
    today = period.parse(
        {"range": "today", "source": "www"}, default_zone="UTC", now=datetime.now(UTC)
    )
    rates = summary.delivery_rates(app.engine, period=today)  # queued today: both events
    assert {r.destination: r.total for r in rates} == {"meta": 1, "hook": 1}
    outcomes = summary.outcomes_per_day(app.engine, period=today)
    assert [(o.destination, o.total) for o in outcomes] == [("hook", 1), ("meta", 1)]
    every = summary.delivery_rates(
        app.engine,
        period=period.parse({"range": "today"}, default_zone="UTC", now=datetime.now(UTC)),
    )
    assert {r.destination: r.total for r in every} == {"meta": 2, "hook": 2}
    assert [
        (t.events, t.conversions) for t in summary.totals_per_day(app.engine, period=today)
    ] == [(1, 1)]


def queued_day(engine: Any) -> date:
    """The UTC day the outbox rows were queued on, read from the rollups rather than the clock
    this module was imported at: a run that crosses midnight queues them on the next day."""
    d = m.delivery_rollups.c
    with engine.connect() as conn:
        first, last = conn.execute(sa.select(sa.func.min(d.hour), sa.func.max(d.hour))).one()
    days = {datetime.fromisoformat(str(h)).date() for h in (first, last)}
    assert len(days) == 1, days
    return days.pop()


def window(today: date, tz: str = "UTC") -> str:
    first = DAY - timedelta(days=1)
    return f"range=custom&from={first.isoformat()}&to={today.isoformat()}&tz={tz}"


async def test_the_page_charts_and_csv_downloads(app: AppClient) -> None:
    await send(app, "b1", "Purchase", at(DAY, 12))
    await send(app, "p1", "page", at(DAY, 13))
    await send(app, "f1", '=HYPERLINK("http://evil.example")', at(DAY, 14))
    assert (await sign_in(app.http)).status_code == 303
    today = queued_day(app.engine)

    page = await app.http.get(f"/admin/reports?{window(today)}")
    assert page.status_code == 200
    html = page.text
    assert '<svg xmlns="http://www.w3.org/2000/svg" role="img"' in html
    assert '<title id="daily-title">Events and conversions per day</title>' in html
    assert "3 events and 1 conversions in all" in html  # the chart's <desc>
    assert '<title id="outcomes0-title">Delivery outcomes per day: hook</title>' in html
    assert '<title id="outcomes1-title">Delivery outcomes per day: meta</title>' in html
    first = DAY - timedelta(days=1)
    same = f"range=custom&tz=UTC&from={first.isoformat()}&to={today.isoformat()}"
    assert f'href="/admin/reports/daily.csv?{same}"' in html.replace("&amp;", "&")

    daily = await app.http.get(f"/admin/reports/daily.csv?{window(today)}")
    assert daily.status_code == 200
    assert daily.headers["content-type"] == "text/csv; charset=utf-8"
    assert daily.headers["content-disposition"] == (
        f'attachment; filename="firstparty-daily-{first.isoformat()}-{today.isoformat()}.csv"'
    )
    days = [first + timedelta(days=i) for i in range((today - first).days + 1)]
    assert daily.text.splitlines() == [
        "day,events,conversions",
        *(f"{d.isoformat()},{3 if d == DAY else 0},{1 if d == DAY else 0}" for d in days),
    ]
    span = window(today)
    names = (await app.http.get(f"/admin/reports/events.csv?{span}")).text.splitlines()
    assert f'{DAY.isoformat()},"\'=HYPERLINK(""http://evil.example"")",1' in names
    outcomes = (await app.http.get(f"/admin/reports/outcomes.csv?{span}")).text.splitlines()
    assert outcomes[0] == "destination,day,delivered,test,skipped,failed,waiting"
    assert f"meta,{today.isoformat()},0,0,0,0,2" in outcomes  # Purchase and the page: pending
    assert f"hook,{today.isoformat()},0,0,0,0,3" in outcomes
    assert f"meta,{DAY.isoformat()},0,0,0,0,0" in outcomes

    assert (await app.http.get(f"/admin/reports/nothing.csv?{window(today)}")).status_code == 404
    bad = await app.http.get("/admin/reports/daily.csv?tz=Nowhere/Land")
    assert bad.status_code == 400 and "tz:" in bad.text
