"""POST /v1/events and /v1/batch through the real app, on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from firstparty.reports import browse
from firstparty.settings import Settings
from firstparty.store import models as m
from tests.conftest import (
    BROWSER_KEY,
    SERVER_KEY,
    AppClient,
    base_config,
    running_app,
    settings_for,
)

SITE = "https://www.example.test"
BROWSER = {"X-Write-Key": BROWSER_KEY, "Origin": SITE}
SERVER = {"X-Write-Key": SERVER_KEY}


async def post(c: AppClient, body: Any, headers: dict[str, str] = BROWSER, **kw: Any) -> Any:
    return await c.http.post("/v1/events", json=body, headers=headers, **kw)


async def test_accepts_and_stores_an_event(app_client: AppClient) -> None:
    r = await post(app_client, {"type": "track", "name": "Lead", "properties": {"value": 49.0}})
    assert r.status_code == 202
    body = r.json()
    assert body["ok"] is True and body["event_id"] and body["visitor_id"]
    [row] = app_client.rows(m.events)
    assert row["id"] == body["id"]
    assert row["name"] == "Lead" and row["source"] == "www"
    assert row["request"]["properties"] == {"value": 49.0}
    assert row["response"]["id"] == body["id"]
    assert row["context"]["ip"] == "198.51.100.7"


async def test_page_events_are_named_page(sqlite_client: AppClient) -> None:
    r = await post(sqlite_client, {"type": "page", "url": SITE + "/pricing", "title": "Pricing"})
    assert r.status_code == 202
    assert sqlite_client.rows(m.events)[0]["name"] == "page"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "track"}, "name"),
        ({"name": "x"}, "type"),
        ({"type": "click"}, "type"),
        ({"type": "track", "name": "x", "user": {"email": 5}}, "user.email"),
        ({"type": "track", "name": "x", "consent": {"ad_storage": "maybe"}}, "consent.ad_storage"),
        ({"type": "track", "name": "x", "surprise": 1}, "surprise"),
        ({"type": "track", "name": "x", "timestamp": "yesterday"}, "timestamp"),
        ({"type": "track", "name": "x" * 200}, "name"),
        ({"type": "track", "name": "x", "event_id": "has space"}, "event_id"),
        ({"type": "track", "name": "x", "user_id": "u" * 40}, "user_id"),
    ],
)
async def test_invalid_event_is_422_naming_the_field(
    sqlite_client: AppClient, body: dict[str, Any], field: str
) -> None:
    r = await post(sqlite_client, body)
    assert r.status_code == 422, r.text
    assert r.json()["details"][0]["field"] == field
    assert sqlite_client.rows(m.events) == []


async def test_malformed_json_is_400(sqlite_client: AppClient) -> None:
    r = await sqlite_client.http.post("/v1/events", content=b'{"type": ', headers=BROWSER)
    assert r.status_code == 400
    assert "malformed JSON" in r.json()["error"]


async def test_write_key_missing_or_unknown_is_401(sqlite_client: AppClient) -> None:
    body = {"type": "page"}
    assert (await post(sqlite_client, body, headers={"Origin": SITE})).status_code == 401
    wrong = {"X-Write-Key": "nope-nope-nope", "Origin": SITE}
    assert (await post(sqlite_client, body, headers=wrong)).status_code == 401
    via_query = await sqlite_client.http.post(
        f"/v1/events?key={BROWSER_KEY}", json=body, headers={"Origin": SITE}
    )
    assert via_query.status_code == 202


async def test_origin_not_allowed_is_403(sqlite_client: AppClient) -> None:
    headers = {"X-Write-Key": BROWSER_KEY, "Origin": "https://evil.example"}
    r = await post(sqlite_client, {"type": "page"}, headers=headers)
    assert r.status_code == 403
    assert "access-control-allow-origin" not in r.headers


async def test_cors_preflight_and_answer_headers(sqlite_client: AppClient) -> None:
    ok = await sqlite_client.http.options(
        "/v1/events",
        headers={"Origin": SITE, "Access-Control-Request-Method": "POST"},
    )
    assert ok.status_code == 204
    assert ok.headers["access-control-allow-origin"] == SITE
    assert ok.headers["access-control-allow-credentials"] == "true"
    assert "X-Write-Key" in ok.headers["access-control-allow-headers"]
    denied = await sqlite_client.http.options("/v1/events", headers={"Origin": "https://evil.test"})
    assert denied.status_code == 403
    r = await post(sqlite_client, {"type": "page"})
    assert r.headers["access-control-allow-origin"] == SITE


async def test_body_too_large_is_413(sqlite_client: AppClient) -> None:
    big = {"type": "track", "name": "x", "properties": {"blob": "a" * 40_000}}
    assert (await post(sqlite_client, big)).status_code == 413
    many = {"events": [{"type": "page"}] * 501}
    r = await sqlite_client.http.post("/v1/batch", json=many, headers=BROWSER)
    assert r.status_code == 413
    assert sqlite_client.rows(m.events) == []


async def test_rate_limit_per_key_is_429(sqlite_url: str) -> None:
    config = base_config(sqlite_url)
    config["sources"][0].update(rate_limit_per_second=0.001, rate_limit_burst=3)
    async with running_app(Settings.model_validate(config)) as client:
        codes = [(await post(client, {"type": "page"})).status_code for _ in range(5)]
        assert codes == [202, 202, 202, 429, 429]
        r = await post(client, {"type": "page"})
        assert int(r.headers["retry-after"]) >= 1
        # Another key is not limited by this one.
        assert (await post(client, {"type": "page"}, headers=SERVER)).status_code == 202


async def test_batch_judges_each_event_alone(app_client: AppClient) -> None:
    events = [
        {"type": "track", "name": "A", "event_id": "b-1"},
        {"type": "track"},
        {"type": "page", "url": SITE},
        {"type": "track", "name": "A", "event_id": "b-1"},
    ]
    r = await app_client.http.post("/v1/batch", json={"events": events}, headers=BROWSER)
    assert r.status_code == 200
    results = r.json()["results"]
    assert [x["ok"] for x in results] == [True, False, True, True]
    assert results[1]["details"][0]["field"] == "name"
    assert results[3]["duplicate"] is True and results[3]["id"] == results[0]["id"]
    assert len(app_client.rows(m.events)) == 2


async def test_batch_malformed_is_400(sqlite_client: AppClient) -> None:
    r = await sqlite_client.http.post("/v1/batch", content=b"[1,", headers=BROWSER)
    assert r.status_code == 400
    r = await sqlite_client.http.post("/v1/batch", json={"events": 3}, headers=BROWSER)
    assert r.status_code == 422 and r.json()["details"][0]["field"] == "events"


async def test_duplicate_event_id_is_acknowledged_not_stored(app_client: AppClient) -> None:
    body = {"type": "track", "name": "Lead", "event_id": "dup-1"}
    first = (await post(app_client, body, headers=SERVER)).json()
    second = await post(app_client, body, headers=SERVER)
    assert second.status_code == 202
    assert second.json()["duplicate"] is True and second.json()["id"] == first["id"]
    # The same event id from another source is another event; the admin's filter finds both
    # on the one index over event ids (events' own, or event_keys' on PostgreSQL).
    other = (await post(app_client, body)).json()
    assert other.get("duplicate") is None
    assert len(app_client.rows(m.events)) == 2
    found = browse.events(app_client.engine, browse.EventFilters(event_id="dup-1"), 10)
    assert sorted(e["id"] for e in found) == sorted([first["id"], other["id"]])
    assert browse.events(app_client.engine, browse.EventFilters(event_id="dup-2"), 10) == []


async def test_dedup_holds_under_concurrency(app_client: AppClient) -> None:
    body = {"type": "track", "name": "Lead", "event_id": "race-1"}
    answers = await asyncio.gather(*(post(app_client, body, headers=SERVER) for _ in range(25)))
    assert {a.status_code for a in answers} == {202}
    assert sum(1 for a in answers if not a.json().get("duplicate")) == 1
    assert len({a.json()["id"] for a in answers}) == 1
    assert len(app_client.rows(m.events)) == 1


async def test_dedup_holds_across_processes(database_url: str) -> None:
    """Two app instances (two engines, two group writers) racing on one event id."""
    body = {"type": "track", "name": "Lead", "event_id": "race-2"}
    async with (
        running_app(settings_for(database_url)) as one,
        running_app(settings_for(database_url)) as two,
    ):
        answers = await asyncio.gather(*(post(c, body, headers=SERVER) for c in [one, two] * 10))
        assert {a.status_code for a in answers} == {202}
        assert sum(1 for a in answers if not a.json().get("duplicate")) == 1
        assert len(one.rows(m.events)) == 1


def cookie_of(response: Any) -> dict[str, str]:
    header = response.headers["set-cookie"]
    name_value, *attrs = [p.strip() for p in header.split(";")]
    parsed = {"value": name_value.split("=", 1)[1]}
    for attr in attrs:
        key, _, value = attr.partition("=")
        parsed[key.lower()] = value or "true"
    return parsed


async def test_cookie_attributes(sqlite_client: AppClient) -> None:
    r = await post(sqlite_client, {"type": "page"})
    c = cookie_of(r)
    assert r.headers["set-cookie"].startswith("fp_id=")
    assert c["httponly"] == c["secure"] == "true"
    assert c["samesite"] == "Lax" and c["path"] == "/"
    assert c["domain"] == "example.test"
    assert c["max-age"] == str(400 * 86400)
    assert c["value"].startswith(r.json()["visitor_id"] + ".")


async def test_cookie_is_stable_and_reissued(sqlite_client: AppClient) -> None:
    first = await post(sqlite_client, {"type": "page"})
    value = cookie_of(first)["value"]
    headers = {**BROWSER, "Cookie": f"fp_id={value}"}
    again = await post(sqlite_client, {"type": "page"}, headers=headers)
    assert cookie_of(again)["value"] == value
    assert again.json()["visitor_id"] == first.json()["visitor_id"]
    # Errors to a browser re-issue it too.
    bad = await post(sqlite_client, {"type": "track"}, headers=headers)
    assert bad.status_code == 422 and cookie_of(bad)["value"] == value


async def test_forged_cookie_is_replaced(sqlite_client: AppClient) -> None:
    first = await post(sqlite_client, {"type": "page"})
    visitor = first.json()["visitor_id"]
    for forged in [f"{visitor}.AAAAAAAAAAAAAAAAAAAAAA", "someone-else.sig", "garbage", visitor]:
        r = await post(
            sqlite_client, {"type": "page"}, headers={**BROWSER, "Cookie": f"fp_id={forged}"}
        )
        assert r.json()["visitor_id"] != visitor
        assert cookie_of(r)["value"] != forged


async def test_server_sources_get_no_cookie(sqlite_client: AppClient) -> None:
    r = await post(sqlite_client, {"type": "track", "name": "Lead"}, headers=SERVER)
    assert "set-cookie" not in r.headers
    assert r.json()["visitor_id"] is None


LANDING = (
    SITE + "/apply?gclid=Cj0KCQ_gc&gbraid=GB1&wbraid=WB1&fbclid=IwAR0_MiXeD-Case"
    "&ttclid=E.C.P.tt&msclkid=ms1&li_fat_id=li1&ScCid=sc1&epik=ep1&rdt_cid=rd1"
    "&utm_source=google&utm_medium=cpc&utm_campaign=spring"
)


async def test_click_ids_and_utm_are_captured(app_client: AppClient) -> None:
    r = await post(
        app_client, {"type": "page", "url": LANDING, "referrer": "https://www.google.com/"}
    )
    visitor = r.json()["visitor_id"]
    clicks = {row["kind"]: row for row in app_client.rows(m.click_ids)}
    assert set(clicks) == {
        "gclid", "gbraid", "wbraid", "fbclid", "ttclid", "msclkid", "li_fat_id", "ScCid",
        "epik", "rdt_cid",
    }  # fmt: skip
    assert clicks["fbclid"]["value"] == "IwAR0_MiXeD-Case"
    assert all(row["visitor_id"] == visitor for row in clicks.values())
    [v] = app_client.rows(m.visitors)
    assert v["first_touch"]["utm"] == {
        "utm_source": "google",
        "utm_medium": "cpc",
        "utm_campaign": "spring",
    }
    assert v["first_touch"]["referrer"] == "https://www.google.com/"
    assert v["first_touch"]["click_ids"]["fbclid"] == "IwAR0_MiXeD-Case"


async def test_first_seen_is_never_overwritten(app_client: AppClient) -> None:
    r = await post(app_client, {"type": "page", "url": SITE + "/?fbclid=First"})
    cookie = {**BROWSER, "Cookie": f"fp_id={cookie_of(r)['value']}"}
    [before] = app_client.rows(m.click_ids)
    await asyncio.sleep(0.01)
    await post(
        app_client, {"type": "page", "url": SITE + "/?fbclid=First&utm_source=x"}, headers=cookie
    )
    await post(app_client, {"type": "page", "url": SITE + "/?fbclid=Second"}, headers=cookie)
    rows = {row["value"]: row for row in app_client.rows(m.click_ids)}
    assert rows["First"]["first_seen_at"] == before["first_seen_at"]
    assert rows["Second"]["first_seen_at"] > before["first_seen_at"]
    [v] = app_client.rows(m.visitors)
    assert v["first_touch"]["click_ids"] == {"fbclid": "First"}
    assert v["last_touch"]["click_ids"] == {"fbclid": "Second"}


async def test_click_ids_from_referer_when_no_url(sqlite_client: AppClient) -> None:
    headers = {**BROWSER, "Referer": SITE + "/landing?gclid=FromReferer"}
    await post(sqlite_client, {"type": "track", "name": "Lead"}, headers=headers)
    [row] = sqlite_client.rows(m.click_ids)
    assert (row["kind"], row["value"]) == ("gclid", "FromReferer")


async def test_touch_can_be_read_back_for_an_event(sqlite_client: AppClient) -> None:
    r = await post(sqlite_client, {"type": "page", "url": SITE + "/?gclid=G1&utm_source=ads"})
    event = await sqlite_client.http.get(
        f"/v1/admin/events/{r.json()['id']}",
        headers={"Authorization": "Bearer admin-token-for-tests"},
    )
    assert event.status_code == 200
    assert event.json()["visitor"]["first_touch"]["click_ids"] == {"gclid": "G1"}
    assert event.json()["visitor"]["click_ids"][0]["value"] == "G1"


def iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


async def test_timestamps_iso_and_epoch(sqlite_client: AppClient) -> None:
    past = datetime.now(UTC) - timedelta(days=2)
    for stamp in [iso(past), int(past.timestamp()), int(past.timestamp() * 1000)]:
        body = {"type": "track", "name": "Offline", "timestamp": stamp}
        assert (await post(sqlite_client, body, headers=SERVER)).status_code == 202
    stored = [row["occurred_at"] for row in sqlite_client.rows(m.events)]
    assert all(abs((s - past).total_seconds()) < 1 for s in stored)


async def test_time_policy(sqlite_client: AppClient) -> None:
    now = datetime.now(UTC)
    # A server source may backfill within 90 days, not from the future or from long ago.
    future = {"type": "track", "name": "x", "timestamp": iso(now + timedelta(hours=1))}
    ancient = {"type": "track", "name": "x", "timestamp": iso(now - timedelta(days=91))}
    for body in (future, ancient):
        r = await post(sqlite_client, body, headers=SERVER)
        assert r.status_code == 422 and r.json()["details"][0]["field"] == "timestamp"
    # A browser's clock is trusted within the skew; beyond it the server time is used.
    skewed = {"type": "track", "name": "y", "timestamp": iso(now - timedelta(days=3))}
    close = {"type": "track", "name": "z", "timestamp": iso(now - timedelta(seconds=30))}
    assert (await post(sqlite_client, skewed)).status_code == 202
    assert (await post(sqlite_client, close)).status_code == 202
    rows = {row["name"]: row for row in sqlite_client.rows(m.events)}
    assert abs((rows["y"]["occurred_at"] - rows["y"]["received_at"]).total_seconds()) < 1
    assert abs((rows["z"]["occurred_at"] - (now - timedelta(seconds=30))).total_seconds()) < 1
    assert rows["y"]["request"]["timestamp"] == skewed["timestamp"]


async def test_server_source_context_is_honoured_browser_is_not(sqlite_client: AppClient) -> None:
    context = {"ip": "203.0.113.9", "user_agent": "CRM/1.0", "fbp": "fb.1.1.2"}
    await post(sqlite_client, {"type": "track", "name": "S", "context": context}, headers=SERVER)
    await post(
        sqlite_client,
        {"type": "track", "name": "B", "context": context},
        headers={**BROWSER, "User-Agent": "RealBrowser/1"},
    )
    rows = {row["name"]: row["context"] for row in sqlite_client.rows(m.events)}
    assert rows["S"] == context
    browser = {k: v for k, v in rows["B"].items() if not k.startswith("session_")}  # GA4's
    assert browser == {"ip": "198.51.100.7", "user_agent": "RealBrowser/1", "fbp": "fb.1.1.2"}


async def test_never_a_500(sqlite_client: AppClient) -> None:
    bodies: list[bytes] = [
        b"", b"null", b"[]", b"{}", b'"x"', b"1e999", b'{"type": null}', b"\xff\xfe",
        b'{"type": "page", "properties": []}', b'{"type": "page", "timestamp": 1e300}',
        b'{"type": "page", "timestamp": -5}', b'{"type": "page", "url": "http://[::1"}',
        b'{"type": "page", "url": "https://x/?gclid=' + b"a" * 600 + b'"}',
        b'{"type": "track", "name": "x", "user": {"phone": "+999 999"}}',
        b'{"type": "track", "name": "x", "timestamp": "2026-13-45T99:99:99Z"}',
        b'{"type": "track", "name": "x", "user": {"date_of_birth": "1/2"}}',
    ]  # fmt: skip
    for body in bodies:
        for path in ("/v1/events", "/v1/batch"):
            r = await sqlite_client.http.post(path, content=body, headers=BROWSER)
            assert r.status_code < 500, (path, body, r.text)
            if r.status_code >= 400:
                assert "Traceback" not in r.text and "error" in r.json()


async def test_page_url_from_referer_when_the_event_has_none(sqlite_client: AppClient) -> None:
    headers = {**BROWSER, "Referer": SITE + "/pricing"}
    await post(sqlite_client, {"type": "track", "name": "Lead"}, headers=headers)
    [row] = sqlite_client.rows(m.events)
    assert row["context"]["page_url"] == SITE + "/pricing"
    assert "url" not in row["request"]  # the request stays as received
    from firstparty.delivery import load

    with sqlite_client.engine.connect() as conn:
        [event] = load.load_events(conn, [row["id"]], kinds={"www": "browser"}).values()
    assert event.url == SITE + "/pricing"
