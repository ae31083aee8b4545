"""Delivery health and match quality: real deliveries by the worker to the strict Meta fake,
counted in the rollups as they settle, read back through the app's pages and CSV downloads;
latency percentiles from the histogram; each platform's replay window against its own skip."""

from __future__ import annotations

import contextlib
import csv
import html
import io
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from firstparty.delivery import health as rollup
from firstparty.destinations import registry
from firstparty.reports import health, period
from firstparty.store import db
from firstparty.store.models import deliveries
from tests import factories
from tests.conftest import make_database, running_app
from tests.delivery.outbox import add_events, delivery_rows, make_worker
from tests.delivery.test_worker import settings_with
from tests.fakes.meta import FakeMeta
from tests.web.test_admin_ui import signed_in_page


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with contextlib.contextmanager(make_database)(str(request.param), tmp_path, migrated=True) as u:
        yield u


def _due_now(engine: Engine) -> None:
    """Work waiting for a retry, due now (as time would make it)."""
    with engine.begin() as conn:
        conn.execute(
            sa.update(deliveries)
            .where(deliveries.c.status == "pending")
            .values(next_attempt_at=datetime.now(UTC) - timedelta(seconds=1))
        )


def _cell(page: str, destination: str, event: str, column: str) -> str:
    row = re.search(
        rf'<tr data-destination="{destination}" data-event="{event}">(.*?)</tr>', page, re.S
    )
    assert row, f"no row {destination}/{event}"
    cell = re.search(rf'data-col="{column}">([^<]*)<', row.group(1))
    assert cell, column
    return html.unescape(cell.group(1)).strip()


def _period() -> period.Period:
    return period.parse({"range": "today"}, default_zone="UTC", now=datetime.now(UTC))


async def test_outcomes_codes_and_match_shares_after_real_deliveries(url: str) -> None:
    with FakeMeta() as meta, FakeMeta() as wrong_token:
        settings = settings_with(
            url,
            factories.META_CAPI | {"api_base": meta.api_base},
            factories.META_CAPI
            | {"name": "meta_bad", "api_base": wrong_token.api_base}
            | {"access_token": "EAAB-revoked"},
        )
        engine = db.create_engine(url)
        add_events(engine, ["meta", "meta_bad"], 3, name="Lead")
        add_events(
            engine, ["meta"], 1, name="Purchase", occurred_at=datetime.now(UTC) - timedelta(days=8)
        )
        meta.script(meta.transient())  # Meta's first answer: code 2, HTTP 500
        work = make_worker(settings, engine)
        await work.drain()
        _due_now(engine)
        await work.drain()
        await work.stop()
        statuses = sorted((r.destination, r.status) for r in delivery_rows(engine))
        assert (
            statuses
            == [("meta", "delivered")] * 3 + [("meta", "skipped")] + [("meta_bad", "failed")] * 3
        )

        rows = {
            (r.destination, r.event_name): r
            for r in health.delivery_health(engine, period=_period())
        }
        lead = rows[("meta", "Lead")]
        assert (lead.sent, lead.count("retried"), lead.count("delivered")) == (6, 3, 3)
        assert lead.codes["retried"] == {"Graph 2": 3}
        assert lead.p50 is not None and lead.p95 is not None and lead.p50 <= lead.p95
        old = rows[("meta", "Purchase")]
        assert (old.sent, old.count("skipped")) == (0, 1)
        assert list(old.codes["skipped"]) == [
            "event is N days old; Meta accepts system_generated events up to N days old"
        ]
        bad = rows[("meta_bad", "Lead")]
        assert (bad.sent, bad.count("failed"), bad.codes["failed"]) == (3, 3, {"Graph 190": 3})

        shares = {
            (r.destination, r.event_name): r for r in health.match_quality(engine, period=_period())
        }
        assert list(shares) == [("meta", "Lead")]  # accepted events only
        accepted = shares[("meta", "Lead")]
        assert accepted.events == 3
        assert (accepted.share("email"), accepted.share("ip"), accepted.share("phone")) == (1, 1, 0)
        engine.dispose()

    async with running_app(settings) as app:
        page = await signed_in_page(app.http, "/admin/reports/delivery-health?range=today")
        assert _cell(page, "meta", "Lead", "sent") == "6"
        assert _cell(page, "meta", "Lead", "retried") == "3"
        assert _cell(page, "meta_bad", "Lead", "failed") == "3"
        assert _cell(page, "meta", "Purchase", "skipped") == "1"
        assert "Graph 190" in page and "Graph 2" in page
        answer = await app.http.get("/admin/reports/delivery-health.csv?range=today")
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
        lines = list(csv.DictReader(io.StringIO(answer.text)))
        failed = [x for x in lines if x["destination"] == "meta_bad" and x["outcome"] == "failed"]
        assert [(x["code"], x["count"], x["sent"]) for x in failed] == [("Graph 190", "3", "3")]

        match = await signed_in_page(app.http, "/admin/reports/match-quality?range=today")
        section = match.split('data-destination="meta"')[1]
        assert re.search(r'data-key="email">100 %<', section)
        assert re.search(r'data-key="phone">0 %<', section)
        assert 'data-key="gclid"' not in section  # Meta does not match on Google's click ids
        csv_match = await app.http.get("/admin/reports/match-quality.csv?range=today")
        assert "meta,Lead,3," in csv_match.text

        elsewhere = await app.http.get("/admin/reports/delivery-health?range=today&source=www")
        assert "Nothing sent in this period." in elsewhere.text  # the events came from "crm"
        assert (
            await app.http.get("/admin/reports/delivery-health?tz=Nowhere/Zone")
        ).status_code == 400


def test_percentiles_come_from_the_histogram(database_url: str) -> None:
    """On every engine (MariaDB's upsert included): counts from two connections add up."""
    engine = db.create_engine(database_url)
    facts = [rollup.Fact("www", "Lead", rollup.Result.DELIVERED, latency_ms=40.0)] * 90
    facts += [rollup.Fact("www", "Lead", rollup.Result.DELIVERED, latency_ms=2500.0)] * 10
    now = datetime.now(UTC)
    with engine.begin() as conn:
        rollup.record(conn, [("meta", facts[:50])], now)
    with engine.begin() as conn:  # another connection: maybe another shard, summed alike
        rollup.record(conn, [("meta", facts[50:])], now)
    [row] = health.delivery_health(engine, period=_period())
    assert row.sent == 100 and row.count("delivered") == 100
    # p50: rank 50 of the 90 in (25, 50] ms -> 25 + 25 * 50/90; p95: rank 95, 5 of the 10 in
    # (2000, 3000] ms -> 2500.
    assert row.p50 == pytest.approx(25 + 25 * 50 / 90)
    assert row.p95 == pytest.approx(2500.0)
    assert health.percentile([0] * 15, 0.5) is None
    assert health.percentile([0] * 14 + [3], 0.95) == 30000.0  # past the last bound: its floor
    engine.dispose()


@pytest.mark.parametrize("kind", sorted(registry.ADAPTERS))
def test_replayable_until_agrees_with_each_platforms_age_window(kind: str) -> None:
    adapter = factories.example_adapter(kind)
    event = factories.rich_lead(datetime.now(UTC) - timedelta(hours=1)).fresh()
    until = adapter.accepted_until(event)
    expected = {
        "meta_capi": timedelta(days=7),
        "tiktok_events": timedelta(days=28),
        "ga4_mp": timedelta(hours=72),
        "google_ads": timedelta(days=90),
    }.get(kind)
    assert until == (None if expected is None else event.occurred_at + expected)
    if until is None:
        assert "old" not in (adapter.skip(event, event.occurred_at + timedelta(days=3650)) or "")
        return
    assert "old" not in (adapter.skip(event, until) or "")
    assert "old" in (adapter.skip(event, until + timedelta(seconds=1)) or "")


def test_replayable_until_follows_the_settings_and_metas_physical_store() -> None:
    event = factories.rich_lead(datetime.now(UTC)).fresh()
    tiktok = factories.tiktok(max_event_age_days=3)
    assert tiktok.accepted_until(event) == event.occurred_at + timedelta(days=3)
    store = factories.meta(server_action_source="physical_store")
    offline = factories.event(occurred_at=event.occurred_at, source_kind="server")
    assert store.accepted_until(offline) == event.occurred_at + timedelta(days=62)
    assert "old" not in (store.skip(offline, event.occurred_at + timedelta(days=61)) or "")
