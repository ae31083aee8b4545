"""What a new user hit in the admin UI (issue 15), through the real app: times to the second with
their zone, the events list by event_id, the deliveries' error column on an answer 500, the next
attempt only while one is planned, request bodies logged alike and shown indented, and an event
page no wider than the window however long a webhook body is (Chromium)."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from firstparty.delivery import track
from firstparty.delivery.outbox import DeliveryStatus
from firstparty.destinations import registry
from firstparty.store import db, migrate
from firstparty.store import models as m
from tests import factories
from tests.alerts import rows
from tests.browser import harness
from tests.conftest import AppClient, running_app, settings_for
from tests.web.test_admin_ui import TOKEN, server_send, signed_in_page

ADMIN = {"Authorization": f"Bearer {TOKEN}"}
ARTIFACTS = Path(__file__).parents[1] / "browser" / "artifacts"
HOOK = {"name": "crm-hook", "type": "webhook", "url": "http://127.0.0.1:9/hook"}
SECRET = "webhook-secret-0123456789"
AT = datetime(2026, 11, 2, 9, 0, 5, 123456, tzinfo=UTC)


def _hook_adapter() -> Any:
    return registry.adapter_for(registry.parse({**HOOK, "secret": SECRET}, 0))


def log_webhook_request(
    engine: sa.Engine, *, status: int, body: bytes, note: str = "hello", work: str = "delivered"
) -> str:
    """An event, its webhook delivery (`work`) and the request that carried it, logged as the
    worker logs it; the event's pk."""
    (event_pk,) = rows.add_events(engine, "crm", 1, at=AT)
    delivery = {
        "event_pk": event_pk,
        "destination": "crm-hook",
        "status": work,
        "attempts": 1,
        "next_attempt_at": datetime(2026, 11, 2, 9, 5, 7, 654321, tzinfo=UTC),
        "occurred_at": AT,
        "created_at": AT,
        "updated_at": AT,
    }
    with engine.begin() as conn:
        delivery_id = conn.execute(sa.insert(m.deliveries).values(delivery)).inserted_primary_key
    assert delivery_id is not None
    event = factories.event(event_pk, properties={"note": note})
    (request,) = _hook_adapter().build([event])
    sent = track.Sent(
        request=request,
        attempt=1,
        status=DeliveryStatus.DELIVERED if status < 300 else DeliveryStatus.PENDING,
        response_status=status,
        response_body=body,
        duration_ms=12.0,
        links=[track.Link(int(delivery_id[0]), event_pk, "delivered" if status < 300 else "retry")],
    )
    with engine.begin() as conn:
        track.record(conn, destination="crm-hook", sent=sent, now=AT)
    return event_pk


async def test_times_show_to_the_second_with_the_zone_and_the_stored_value_as_title(
    sqlite_client: AppClient,
) -> None:
    rows.add_events(sqlite_client.engine, "crm", 1, at=AT)
    page = await signed_in_page(sqlite_client.http)
    shown = re.findall(r'<time datetime="([^"]+)" title="([^"]+)">([^<]+)</time>', page)
    assert ("2026-11-02T09:00:05.123456+00:00",) * 2 + ("2026-11-02 09:00:05 UTC",) in shown
    assert ">2026-11-02T09:00:05.123456" not in page  # never as the visible text


async def test_times_show_in_the_reports_time_zone_when_one_is_set(sqlite_url: str) -> None:
    settings = settings_for(sqlite_url, reports={"time_zone": "Europe/Paris"})
    async with running_app(settings) as app:
        rows.add_events(app.engine, "crm", 1, at=AT)
        page = await signed_in_page(app.http)
    assert 'title="2026-11-02T09:00:05.123456+00:00">2026-11-02 10:00:05 CET</time>' in page


async def test_the_events_list_filters_by_event_id_in_the_ui_and_the_api(
    sqlite_client: AppClient,
) -> None:
    for event_id in ("order-1", "order-2", "order-10"):
        await server_send(sqlite_client, {"type": "track", "name": "Lead", "event_id": event_id})
    page = await signed_in_page(sqlite_client.http, "/admin/?event_id=order-1")
    assert "order-1<" in page and "order-2" not in page and "order-10" not in page
    assert 'name="event_id" value="order-1"' in page
    answer = await sqlite_client.http.get("/v1/admin/events?event_id=order-2", headers=ADMIN)
    assert [e["event_id"] for e in answer.json()["items"]] == ["order-2"]
    long = await sqlite_client.http.get("/v1/admin/events?event_id=" + "x" * 600, headers=ADMIN)
    assert long.status_code == 422


async def test_an_answer_500_shows_its_status_and_the_start_of_its_body(
    sqlite_client: AppClient,
) -> None:
    engine = sqlite_client.engine
    log_webhook_request(engine, status=500, body=b"<html>upstream\n  timed out</html>" + b"x" * 400)
    log_webhook_request(engine, status=200, body=b"ok")
    page = await signed_in_page(sqlite_client.http, "/admin/deliveries")
    errors = re.findall(r'<td class="error">([^<]*(?:&lt;[^<]*)*)</td>', page)
    assert len(errors) == 2 and errors[0] == ""  # newest first: the 200 has none
    shown = html.unescape(errors[1])
    assert shown.startswith("HTTP 500: <html>upstream timed out</html>xxx")
    assert shown.endswith("…") and len(shown) < 180


async def test_the_next_attempt_shows_only_while_one_is_planned(sqlite_client: AppClient) -> None:
    engine = sqlite_client.engine
    done = log_webhook_request(engine, status=200, body=b"ok")
    waiting = log_webhook_request(engine, status=500, body=b"busy", work="pending")
    delivered = await signed_in_page(sqlite_client.http, f"/admin/events/{done}")
    assert "09:05:07" not in delivered
    pending = await signed_in_page(sqlite_client.http, f"/admin/events/{waiting}")
    assert ">2026-11-02 09:05:07 UTC</time>" in pending


async def test_a_webhook_body_is_logged_as_json_like_every_other_and_shown_indented(
    sqlite_client: AppClient,
) -> None:
    engine = sqlite_client.engine
    pk = log_webhook_request(engine, status=200, body=b"ok", note="indented")
    with engine.connect() as conn:
        logged = conn.execute(sa.select(m.tracks.c.request)).scalar_one()
    assert isinstance(logged, dict) and logged["properties"] == {"note": "indented"}
    assert SECRET not in json.dumps(logged)
    # A row logged before (the body as a string) reads back as the same object.
    with engine.begin() as conn:
        conn.execute(sa.update(m.tracks).values(request=json.dumps(logged)))
    answer = await sqlite_client.http.get(f"/v1/admin/events/{pk}", headers=ADMIN)
    assert answer.json()["tracks"][0]["request"] == logged
    page = html.unescape(await signed_in_page(sqlite_client.http, f"/admin/events/{pk}"))
    assert '\n  "properties": {\n    "note": "indented"\n  },' in page


def test_text_that_is_not_json_stays_text() -> None:
    assert track.json_or_text("grant_type=refresh_token") == "grant_type=refresh_token"
    assert track.json_or_text("{not json") == "{not json"
    assert track.json_or_text('"a string"') == '"a string"'
    assert track.json_or_text(' {"a": [1]}') == {"a": [1]}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, sa.Engine]]:
    from firstparty.app import create_app

    url = f"sqlite:///{tmp_path / 'firstparty.db'}"
    engine = db.create_engine(url, poolclass=sa.NullPool)
    migrate.upgrade(engine)
    settings = settings_for(url)
    with harness.ServerThread(create_app(settings), harness.certificate(tmp_path)) as server:
        yield f"https://127.0.0.1:{server.port}", engine
    engine.dispose()


def test_an_event_page_with_a_long_webhook_body_fits_the_window(
    served: tuple[str, sa.Engine],
) -> None:
    base, engine = served
    note = "a-very-long-value-without-spaces-" * 240  # ~7,900 characters on one line before
    pk = log_webhook_request(engine, status=500, body=note.encode(), note=note, work="pending")
    ARTIFACTS.mkdir(exist_ok=True)
    with harness.admin_page(base, TOKEN) as page:
        page.goto(f"{base}/admin/events/{pk}")
        assert "a-very-long-value" in page.inner_text("table.track pre")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 1280, f"the event page is {width} px wide"
        page.screenshot(path=str(ARTIFACTS / "admin-event-long-body.png"), full_page=True)
        page.goto(f"{base}/admin/deliveries")
        assert page.evaluate("document.documentElement.scrollWidth") <= 1280
        page.screenshot(path=str(ARTIFACTS / "admin-deliveries-500.png"), full_page=True)
