"""The platforms' verdicts: the scheduled pull asks the strict Meta fake's Dataset Quality API and
the Google fake's requestStatus after real deliveries, stores them with their day, holds a lease
so one process pulls, and the match quality page shows them with that day."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

import pytest
import sqlalchemy as sa

from firstparty.delivery import verdicts
from firstparty.destinations import base, registry
from firstparty.destinations.meta_capi import QUALITY_FIELDS
from firstparty.store import db
from firstparty.store.models import platform_verdicts, tracks
from tests import factories
from tests.conftest import make_database, running_app, settings_for
from tests.delivery.outbox import add_events, all_settled, eventually, make_worker
from tests.delivery.test_follow_up import google_destination
from tests.delivery.test_worker import FAST, settings_with
from tests.fakes import google as fake_google
from tests.fakes import server
from tests.fakes.meta import ACCESS_TOKEN, PIXEL_ID, FakeMeta
from tests.web.test_admin_ui import signed_in_page


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with contextlib.contextmanager(make_database)(str(request.param), tmp_path, migrated=True) as u:
        yield u


def _stored(engine: sa.Engine) -> list[tuple[str, str, str, str]]:
    v = platform_verdicts.c
    with engine.connect() as conn:
        rows = conn.execute(sa.select(v.destination, v.event_name, v.metric, v.value, v.day))
        return sorted((r[0], r[1], r[2], r[3]) for r in rows)


async def test_metas_event_match_quality_is_pulled_stored_and_shown(url: str) -> None:
    with FakeMeta() as meta:
        settings = settings_with(url, factories.META_CAPI | {"api_base": meta.api_base})
        engine = db.create_engine(url)
        add_events(engine, ["meta"], 3, name="Lead")
        work = make_worker(settings, engine)
        await work.drain()
        await work.stop()
        meta.emq["Lead"] = 6.2
        adapters = registry.adapters(settings.destinations)
        puller = verdicts.Puller(settings=settings, engine=engine, adapters=adapters)
        other = verdicts.Puller(settings=settings, engine=engine, adapters=adapters)
        assert await puller.round() == verdicts.Pulled(True, 1, 0)
        assert await other.round() == verdicts.Pulled(False)  # the lease: one process pulls
        await puller.close()
        await other.close()
        assert meta.quality_calls == 1

    assert _stored(engine) == [("meta", "Lead", "event_match_quality", "6.2")]
    with engine.connect() as conn:
        details = conn.execute(sa.select(platform_verdicts.c.detail)).scalar_one()
        logged = conn.execute(sa.select(tracks.c.url).where(tracks.c.method == "GET")).scalar_one()
    assert "email 100 %" in details and "ip_address 100 %" in details and "phone" not in details
    assert "dataset_quality" in logged and ACCESS_TOKEN not in logged and "[redacted]" in logged
    engine.dispose()

    today = datetime.now(UTC).date().isoformat()
    async with running_app(settings) as app:
        page = await signed_in_page(app.http, "/admin/reports/match-quality?range=today")
    row = page.split('data-event="Lead"')[1].split("</tr>")[0]
    assert "<strong>6.2</strong>" in row and f"as of {today}" in row


async def test_googles_match_rate_range_is_pulled_from_request_status(url: str) -> None:
    with fake_google.FakeGoogle() as fake:
        fake.processing_calls = 0
        fake.match_rate = "MATCH_RATE_RANGE_41_TO_50"
        settings = settings_for(url, destinations=[google_destination(fake)], delivery=FAST)
        engine = db.create_engine(url)
        add_events(engine, ["google"], 2)
        work = make_worker(settings, engine)
        await work.start()
        await eventually(all_settled(engine), timeout=30)
        await work.stop()
        asked = sum(fake.status_calls.values())
        puller = verdicts.Puller(
            settings=settings, engine=engine, adapters=registry.adapters(settings.destinations)
        )
        assert await puller.round() == verdicts.Pulled(True, 1, 0)
        await puller.close()
        assert sum(fake.status_calls.values()) == asked + 1
    assert _stored(engine) == [("google", "Lead", "match_rate_range", "41_TO_50")]
    engine.dispose()


def _ask(meta: FakeMeta, **query: str) -> base.Response:
    url = f"{meta.api_base}/dataset_quality?{urlencode(query)}"
    return server.send(base.OutgoingRequest(method="GET", url=url, event_pks=()))


def test_the_meta_fake_refuses_what_graph_refuses() -> None:
    good = {"dataset_id": PIXEL_ID, "fields": QUALITY_FIELDS, "access_token": ACCESS_TOKEN}
    with FakeMeta() as meta:
        assert _ask(meta, **good).status == 200
        refusals = {
            "no token": {k: v for k, v in good.items() if k != "access_token"},
            "wrong token": good | {"access_token": "EAAB-other"},
            "no dataset": {k: v for k, v in good.items() if k != "dataset_id"},
            "other dataset": good | {"dataset_id": "999"},
            "no fields": {k: v for k, v in good.items() if k != "fields"},
            "unknown parameter": good | {"pixel_id": PIXEL_ID},
        }
        codes = {}
        for what, query in refusals.items():
            answer = _ask(meta, **query)
            assert answer.status == 400, what
            codes[what] = answer.json()["error"]["code"]
        assert codes == {
            "no token": 190,
            "wrong token": 190,
            "no dataset": 100,
            "other dataset": 100,
            "no fields": 100,
            "unknown parameter": 100,
        }
        posted = server.send(
            base.OutgoingRequest(
                method="POST", url=f"{meta.api_base}/dataset_quality", event_pks=(), json=good
            )
        )
        assert posted.status == 400
        assert meta.quality_calls == 1


async def test_a_refused_pull_keeps_nothing_and_is_counted(sqlite_url: str) -> None:
    with FakeMeta(access_token="EAAB-the-real-one") as meta:
        settings = settings_with(sqlite_url, factories.META_CAPI | {"api_base": meta.api_base})
        from firstparty.store import migrate

        engine = db.create_engine(sqlite_url)
        migrate.upgrade(engine)
        puller = verdicts.Puller(
            settings=settings, engine=engine, adapters=registry.adapters(settings.destinations)
        )
        assert await puller.round() == verdicts.Pulled(True, 0, 1)
        await puller.close()
    assert _stored(engine) == []
    engine.dispose()
