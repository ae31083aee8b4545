"""Issue 11, input: one bad field never costs the event; numbers are numbers; time never ahead.

Through the real app, on SQLite, PostgreSQL and MariaDB where the stored form matters.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

from firstparty.store import models as m
from tests.conftest import BROWSER_KEY, SERVER_KEY, AppClient

SITE = "https://www.example.test"
BROWSER = {"X-Write-Key": BROWSER_KEY, "Origin": SITE}
SERVER = {"X-Write-Key": SERVER_KEY}


def sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def fields(answer: dict[str, Any]) -> dict[str, str]:
    return {w["field"]: w["message"] for w in answer.get("warnings", [])}


BAD_USER = {
    "email": "jane doe@example.com",
    "phone": "call me maybe",
    "gender": "other",
    "date_of_birth": "1990-02-30",
    "first_name": "Jane",
}


async def test_an_unusable_identifier_is_dropped_not_the_event(app_client: AppClient) -> None:
    for headers in (BROWSER, SERVER):
        event = {"type": "track", "name": "Lead", "user": BAD_USER}
        r = await app_client.http.post("/v1/events", json=event, headers=headers)
        assert r.status_code == 202, r.text
        warned = fields(r.json())
        assert set(warned) == {"user.email", "user.phone", "user.gender", "user.date_of_birth"}
        assert warned["user.gender"].startswith('must be "f" or "m"')
    rows = app_client.rows(m.events)
    assert len(rows) == 2
    for row in rows:
        assert row["user"] == {"fn": sha256("jane")}  # stored without the dropped fields
        assert row["request"]["user"] == {"hashed": {"fn": sha256("jane")}}
        assert {w["field"] for w in row["response"]["warnings"]} == {
            "user.email",
            "user.phone",
            "user.gender",
            "user.date_of_birth",
        }  # the answer as sent, kept with the event
    assert len(app_client.rows(m.deliveries)) == 0  # no destinations here; nothing refused


async def test_a_clean_event_has_no_warnings_key(sqlite_client: AppClient) -> None:
    r = await sqlite_client.http.post("/v1/events", json={"type": "page"}, headers=BROWSER)
    assert r.status_code == 202 and "warnings" not in r.json()


async def test_batch_items_carry_their_own_warnings(app_client: AppClient) -> None:
    events = [
        {"type": "track", "name": "A", "user": {"phone": "12"}},
        {"type": "track", "name": "B", "properties": {"value": "lots"}},
        {"type": "track", "name": "C"},
    ]
    r = await app_client.http.post("/v1/batch", json={"events": events}, headers=SERVER)
    assert r.status_code == 200
    results = r.json()["results"]
    assert [x["ok"] for x in results] == [True, True, True]
    assert list(fields(results[0])) == ["user.phone"]
    assert list(fields(results[1])) == ["properties.value"]
    assert "warnings" not in results[2]
    assert len(app_client.rows(m.events)) == 3


async def test_numbers_are_numbers_and_currency_an_iso_code(app_client: AppClient) -> None:
    properties = {
        "value": "49.90",
        "price": " 12 ",
        "quantity": "2",
        "currency": "usd",
        "products": [{"sku": "A", "price": "9.5", "quantity": "two"}],
        "contents": [{"id": "A", "item_price": "9.50", "quantity": 1}],
    }
    event = {"type": "track", "name": "Purchase", "properties": properties}
    r = await app_client.http.post("/v1/events", json=event, headers=SERVER)
    assert r.status_code == 202
    assert fields(r.json()) == {"properties.products.0.quantity": "must be a number"}
    [row] = app_client.rows(m.events)
    assert row["request"]["properties"] == {
        "value": 49.9,
        "price": 12,
        "quantity": 2,
        "currency": "USD",
        "products": [{"sku": "A", "price": 9.5}],
        "contents": [{"id": "A", "item_price": 9.5, "quantity": 1}],
    }


async def test_an_unusable_amount_or_currency_is_dropped(sqlite_client: AppClient) -> None:
    properties = {"value": "49,90 €", "quantity": True, "currency": "dollars", "plan": "pro"}
    event = {"type": "track", "name": "Purchase", "properties": properties}
    r = await sqlite_client.http.post("/v1/events", json=event, headers=SERVER)
    assert r.status_code == 202
    assert set(fields(r.json())) == {
        "properties.value",
        "properties.quantity",
        "properties.currency",
    }
    [row] = sqlite_client.rows(m.events)
    assert row["request"]["properties"] == {"plan": "pro"}


async def test_a_fast_browser_clock_is_never_taken_as_is(app_client: AppClient) -> None:
    ahead = datetime.now(UTC) + timedelta(minutes=5)
    behind = datetime.now(UTC) - timedelta(minutes=5)
    for name, stated in (("Ahead", ahead), ("Behind", behind)):
        event = {"type": "track", "name": name, "timestamp": stated.isoformat()}
        r = await app_client.http.post("/v1/events", json=event, headers=BROWSER)
        assert r.status_code == 202
    rows = {r["name"]: r for r in app_client.rows(m.events)}
    assert rows["Ahead"]["occurred_at"] == rows["Ahead"]["received_at"]  # min(stated, received)
    assert abs(rows["Behind"]["occurred_at"] - behind) < timedelta(milliseconds=1)


async def test_a_server_time_slightly_ahead_is_the_receive_time(sqlite_client: AppClient) -> None:
    ahead = datetime.now(UTC) + timedelta(minutes=2)
    event = {"type": "track", "name": "Lead", "timestamp": ahead.isoformat()}
    assert (await sqlite_client.http.post("/v1/events", json=event, headers=SERVER)).is_success
    [row] = sqlite_client.rows(m.events)
    assert row["occurred_at"] == row["received_at"]


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


async def test_segment_answers_stay_segment_shaped_with_warnings(
    sqlite_client: AppClient,
) -> None:
    traits = {"email": "ada@example.com", "phone": "12", "gender": "other"}
    single = {"type": "identify", "messageId": "m-1", "userId": "crm-1", "traits": traits}
    r = await sqlite_client.http.post(
        "/segment/v1/identify", json=single, headers=basic(SERVER_KEY)
    )
    assert r.status_code == 200
    body = r.json()
    assert body["success"] is True
    assert {(w["messageId"], w["field"]) for w in body["warnings"]} == {
        ("m-1", "user.phone"),
        ("m-1", "user.gender"),
    }
    batch = {
        "batch": [
            {"type": "track", "event": "Ok", "messageId": "b-1", "userId": "crm-1"},
            {"type": "track", "event": "Buy", "messageId": "b-2", "userId": "crm-1",
             "properties": {"value": "12.5", "currency": "eur", "price": "n/a"}},
        ]
    }  # fmt: skip
    r = await sqlite_client.http.post("/segment/v1/batch", json=batch, headers=basic(SERVER_KEY))
    assert r.status_code == 200
    assert r.json()["warnings"] == [
        {"index": 1, "messageId": "b-2", "field": "properties.price", "message": "must be a number"}
    ]
    rows = {row["event_id"]: row for row in sqlite_client.rows(m.events)}
    assert set(rows) == {"m-1", "b-1", "b-2"}
    assert rows["m-1"]["user"]["em"] == sha256("ada@example.com")
    assert "ph" not in rows["m-1"]["user"] and "ge" not in rows["m-1"]["user"]
    assert rows["b-2"]["request"]["properties"] == {"value": 12.5, "currency": "EUR"}
    metrics = (await sqlite_client.http.get("/metrics")).text
    assert 'firstparty_ingest_warnings_total{field="user.phone",source="crm"}' in metrics
