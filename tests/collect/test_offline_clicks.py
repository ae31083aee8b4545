"""Issue 11, offline imports: a server event's own click ids (a CRM's), kept and used for it.

Through the real app on SQLite, PostgreSQL and MariaDB; what an adapter would see is read with
the delivery loader, as the worker does.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from firstparty.delivery import load
from firstparty.store import models as m
from tests.conftest import BROWSER_KEY, SERVER_KEY, AppClient

SERVER = {"X-Write-Key": SERVER_KEY}
SITE = "https://www.example.test"


def iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def loaded(client: AppClient, pk: str) -> load.Event:
    with client.engine.connect() as conn:
        return load.load_events(conn, [pk], kinds={"crm": "server", "www": "browser"})[pk]


async def test_a_crm_event_without_visitor_keeps_its_own_click_ids(app_client: AppClient) -> None:
    clicked = (datetime.now(UTC) - timedelta(days=3)).replace(microsecond=0)
    occurred = (datetime.now(UTC) - timedelta(days=1)).replace(microsecond=0)
    event = {
        "type": "track",
        "name": "Purchase",
        "timestamp": iso(occurred),
        "url": SITE + "/lead?wbraid=W-from-url",
        "context": {"click_ids": {"GCLID": "G-crm", "clicked_at": iso(clicked)}},
    }
    r = await app_client.http.post("/v1/events", json=event, headers=SERVER)
    assert r.status_code == 202 and "warnings" not in r.json()
    pk = r.json()["id"]
    rows = app_client.rows(m.click_ids)
    assert {(c["kind"], c["value"], c["event_pk"], c["visitor_id"]) for c in rows} == {
        ("gclid", "G-crm", pk, None),
        ("wbraid", "W-from-url", pk, None),
    }
    assert {c["first_seen_at"] for c in rows} == {clicked}  # clicked_at holds for both
    [stored] = app_client.rows(m.events)
    assert "click_ids" not in stored["context"]
    got = loaded(app_client, pk)
    assert got.click_id("gclid") is not None and got.click_id("gclid").value == "G-crm"
    assert got.click_id("gclid").first_seen_at == clicked
    assert got.click_id("wbraid").value == "W-from-url"


async def test_without_clicked_at_they_count_from_the_events_own_time(
    app_client: AppClient,
) -> None:
    occurred = (datetime.now(UTC) - timedelta(hours=5)).replace(microsecond=0)
    event = {
        "type": "track",
        "name": "Lead",
        "timestamp": iso(occurred),
        "context": {"click_ids": {"gclid": "G-now", "fbclid": "Fb-Case"}},
    }
    r = await app_client.http.post("/v1/events", json=event, headers=SERVER)
    assert {c["first_seen_at"] for c in app_client.rows(m.click_ids)} == {occurred}
    got = loaded(app_client, r.json()["id"])
    assert {(c.kind, c.value) for c in got.click_ids} == {("gclid", "G-now"), ("fbclid", "Fb-Case")}


async def test_beside_the_click_ids_of_the_persons_devices(sqlite_client: AppClient) -> None:
    browser = {"X-Write-Key": BROWSER_KEY, "Origin": SITE}
    landing = {"type": "page", "url": SITE + "/?ttclid=TT-browser"}
    visitor = (await sqlite_client.http.post("/v1/events", json=landing, headers=browser)).json()
    event = {
        "type": "track",
        "name": "Purchase",
        "visitor_id": visitor["visitor_id"],
        "context": {"click_ids": {"gclid": "G-crm"}},
    }
    r = await sqlite_client.http.post("/v1/events", json=event, headers=SERVER)
    got = loaded(sqlite_client, r.json()["id"])
    assert {(c.kind, c.value) for c in got.click_ids} == {
        ("ttclid", "TT-browser"),
        ("gclid", "G-crm"),
    }
    # With a visitor they are the visitor's from now on, as a landing page's would be.
    assert {c["visitor_id"] for c in sqlite_client.rows(m.click_ids)} == {visitor["visitor_id"]}


async def test_bad_click_ids_are_warned_and_browsers_cannot_state_them(
    sqlite_client: AppClient,
) -> None:
    given = {"gclid": "G-ok", "mystery": "x", "clicked_at": "last tuesday"}
    event = {"type": "track", "name": "Lead", "context": {"click_ids": given}}
    r = await sqlite_client.http.post("/v1/events", json=event, headers=SERVER)
    warned = {w["field"] for w in r.json()["warnings"]}
    assert warned == {"context.click_ids.mystery", "context.click_ids.clicked_at"}
    assert [c["value"] for c in sqlite_client.rows(m.click_ids)] == ["G-ok"]
    browser = {"X-Write-Key": BROWSER_KEY, "Origin": SITE}
    r = await sqlite_client.http.post("/v1/events", json=event, headers=browser)
    assert [w["field"] for w in r.json()["warnings"]] == ["context.click_ids"]
    assert len(sqlite_client.rows(m.click_ids)) == 1
