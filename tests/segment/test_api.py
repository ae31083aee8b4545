"""Segment's HTTP Tracking API through the real app: routes, auth, gzip, limits, answers."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest

from firstparty.collect import segment
from tests.conftest import BROWSER_KEY, SERVER_KEY, AppClient
from tests.segment.wire import basic, events, gzipped

ORIGIN = "https://www.example.test"
LONG = ["track", "page", "screen", "identify", "alias", "group"]
SHORT = {"t": "track", "p": "page", "s": "screen", "i": "identify", "a": "alias", "g": "group"}
STORED = {
    "track": ("track", "Signed Up"),
    "page": ("page", "page"),
    "screen": ("page", "page"),
    "identify": ("identify", "identify"),
    "alias": ("track", "segment.alias"),
    "group": ("track", "segment.group"),
}


def message(segment_type: str, message_id: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"type": segment_type, "messageId": message_id, "anonymousId": "a-1"}
    if segment_type == "track":
        body["event"] = "Signed Up"
    if segment_type == "alias":
        body["previousId"] = "a-1"
        body["userId"] = "crm-42"
    if segment_type == "group":
        body["groupId"] = "acme"
    return {**body, **extra}


@pytest.mark.parametrize("path", [*LONG, *SHORT])
async def test_every_single_message_route_stores_one_event(
    sqlite_client: AppClient, path: str
) -> None:
    segment_type = SHORT.get(path, path)
    body = message(segment_type, f"m-{path}")
    r = await sqlite_client.http.post(f"/segment/v1/{path}", json=body, headers=basic(SERVER_KEY))
    assert r.status_code == 200 and r.json() == {"success": True}, r.text
    [row] = events(sqlite_client)
    assert (row["type"], row["name"]) == STORED[segment_type]
    assert row["event_id"] == f"m-{path}" and row["source"] == "crm"
    assert row["request"]["segment"]["type"] in (segment_type, None)


async def test_the_route_decides_the_type(sqlite_client: AppClient) -> None:
    body = {"type": "identify", "event": "Clicked", "messageId": "m1", "userId": "x"}
    r = await sqlite_client.http.post("/segment/v1/t", json=body, headers=basic(SERVER_KEY))
    assert r.status_code == 200
    assert [(e["type"], e["name"]) for e in events(sqlite_client)] == [("track", "Clicked")]


@pytest.mark.parametrize("path", ["batch", "b"])
async def test_batch_stores_each_message_once_and_dedupes_a_retry(
    sqlite_client: AppClient, path: str
) -> None:
    batch = [message(t, f"b-{t}") for t in LONG]
    body = {"batch": batch, "sentAt": "2026-01-01T00:00:00Z", "writeKey": SERVER_KEY}
    first = await sqlite_client.http.post(f"/segment/v1/{path}", json=body)
    again = await sqlite_client.http.post(f"/segment/v1/{path}", json=body)
    assert first.json() == again.json() == {"success": True}
    assert sorted(e["event_id"] for e in events(sqlite_client)) == sorted(f"b-{t}" for t in LONG)


@pytest.mark.parametrize(
    "auth",
    [
        {"headers": basic(SERVER_KEY)},
        {"headers": {"X-Write-Key": SERVER_KEY}},
        {"params": {"key": SERVER_KEY}},
        {"body": {"writeKey": SERVER_KEY}},
    ],
    ids=["basic", "header", "query", "body"],
)
async def test_every_way_of_giving_the_write_key(
    sqlite_client: AppClient, auth: dict[str, Any]
) -> None:
    body = {**message("track", "k1"), **auth.get("body", {})}
    r = await sqlite_client.http.post(
        "/segment/v1/track",
        json=body,
        headers=auth.get("headers", {}),
        params=auth.get("params", {}),
    )
    assert r.status_code == 200, r.text
    assert events(sqlite_client)[0]["source"] == "crm"
    assert SERVER_KEY not in json.dumps(events(sqlite_client)[0]["request"])


async def test_missing_or_unknown_key_is_a_segment_style_401(sqlite_client: AppClient) -> None:
    missing = await sqlite_client.http.post("/segment/v1/track", json=message("track", "x"))
    unknown = await sqlite_client.http.post(
        "/segment/v1/track", json=message("track", "x"), headers=basic("nope")
    )
    for r in (missing, unknown):
        assert r.status_code == 401
        assert r.json()["success"] is False and r.json()["code"] == "unauthorized"
    assert events(sqlite_client) == []


async def test_gzip_bodies(sqlite_client: AppClient) -> None:
    body = {"batch": [message("track", "g1"), message("page", "g2")]}
    headers = {**basic(SERVER_KEY), "Content-Encoding": "gzip"}
    r = await sqlite_client.http.post("/segment/v1/batch", content=gzipped(body), headers=headers)
    assert r.status_code == 200, r.text
    assert len(events(sqlite_client)) == 2
    broken = await sqlite_client.http.post(
        "/segment/v1/batch", content=b"not gzip", headers=headers
    )
    assert broken.status_code == 400 and broken.json()["code"] == "invalid_request"


async def test_a_gzip_body_that_inflates_past_the_limit_is_refused(
    sqlite_client: AppClient,
) -> None:
    padding = "x" * (600 * 1024)
    bomb = gzip.compress(json.dumps({"batch": [], "pad": padding}).encode())
    assert len(bomb) < 10_000
    headers = {**basic(SERVER_KEY), "Content-Encoding": "gzip"}
    r = await sqlite_client.http.post("/segment/v1/batch", content=bomb, headers=headers)
    assert r.status_code == 400 and "larger than" in r.json()["message"]


async def test_segment_size_limits(sqlite_client: AppClient) -> None:
    http, headers = sqlite_client.http, basic(SERVER_KEY)
    big = message("track", "big", properties={"pad": "x" * (33 * 1024)})
    single = await http.post("/segment/v1/track", json=big, headers=headers)
    assert single.status_code == 400 and single.json()["code"] == "invalid_request"
    huge = {
        "batch": [message("track", f"h{i}", properties={"pad": "x" * 30_000}) for i in range(18)]
    }
    whole = await http.post("/segment/v1/batch", json=huge, headers=headers)
    assert whole.status_code == 400
    assert events(sqlite_client) == []
    mixed = {"batch": [message("track", "ok1"), big, message("track", "ok2")]}
    r = await http.post("/segment/v1/batch", json=mixed, headers=headers)
    assert r.status_code == 200 and r.json()["success"] is True
    [left_out] = r.json()["rejected"]
    assert left_out["index"] == 1 and left_out["messageId"] == "big"
    assert sorted(e["event_id"] for e in events(sqlite_client)) == ["ok1", "ok2"]


async def test_a_bad_message_in_a_batch_does_not_fail_the_batch(sqlite_client: AppClient) -> None:
    batch = [
        message("track", "good"),
        {"type": "track", "messageId": "no-name"},
        {"type": "nonsense", "messageId": "weird"},
        {"type": "track", "event": "X", "messageId": "bad-time", "timestamp": "yesterday"},
        "not an object",
    ]
    r = await sqlite_client.http.post(
        "/segment/v1/batch", json={"batch": batch}, headers=basic(SERVER_KEY)
    )
    assert r.status_code == 200 and r.json()["success"] is True
    assert [x["index"] for x in r.json()["rejected"]] == [1, 2, 3, 4]
    assert [e["event_id"] for e in events(sqlite_client)] == ["good"]


async def test_an_invalid_single_message_is_a_400(sqlite_client: AppClient) -> None:
    http, headers = sqlite_client.http, basic(SERVER_KEY)
    unnamed = await http.post("/segment/v1/track", json={"messageId": "x"}, headers=headers)
    assert unnamed.status_code == 400 and unnamed.json()["details"][0]["field"] == "name"
    broken = await http.post("/segment/v1/track", content=b"{nope", headers=headers)
    assert broken.status_code == 400 and "malformed JSON" in broken.json()["message"]


async def test_browser_source_gets_the_cookie_and_cors(sqlite_client: AppClient) -> None:
    headers = {**basic(BROWSER_KEY), "Origin": ORIGIN, "Content-Type": "text/plain"}
    body = message("page", "p1", anonymousId="ajs-anon")
    r = await sqlite_client.http.post("/segment/v1/p", content=json.dumps(body), headers=headers)
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert r.headers["access-control-allow-credentials"] == "true"
    assert r.headers["set-cookie"].startswith("fp_id=")
    [row] = events(sqlite_client)
    assert row["visitor_id"] == r.headers["set-cookie"].split("=", 1)[1].split(".")[0]
    # Kept only as a hash at rest (issue 12): never the SDK's value in clear.
    assert row["request"]["segment"]["anonymousId"] == segment.visitor_id("ajs-anon") != "ajs-anon"
    forbidden = await sqlite_client.http.post(
        "/segment/v1/p", json=body, headers={**headers, "Origin": "https://evil.test"}
    )
    assert forbidden.status_code == 403 and forbidden.json()["code"] == "forbidden"


async def test_preflight_allows_the_sdk_headers(sqlite_client: AppClient) -> None:
    r = await sqlite_client.http.options(
        "/segment/v1/t",
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"},
    )
    assert r.status_code == 204
    assert "Authorization" in r.headers["access-control-allow-headers"]
    assert r.headers["access-control-allow-credentials"] == "true"


async def test_project_settings_for_analytics_js(sqlite_client: AppClient) -> None:
    r = await sqlite_client.http.get(
        f"/segment/v1/projects/{BROWSER_KEY}/settings", headers={"Origin": ORIGIN}
    )
    assert r.status_code == 200
    io = r.json()["integrations"]["Segment.io"]
    assert io["apiHost"] == "t.example.test/segment/v1" and io["protocol"] == "https"
    assert io["deliveryStrategy"]["config"]["credentials"] == "include"
    assert r.headers["access-control-allow-origin"] == ORIGIN
    server = await sqlite_client.http.get(f"/segment/v1/projects/{SERVER_KEY}/settings")
    assert server.status_code == 404


async def test_library_metrics_are_accepted_and_dropped(sqlite_client: AppClient) -> None:
    r = await sqlite_client.http.post("/segment/v1/m", content=b'{"series": []}')
    assert r.json() == {"success": True} and events(sqlite_client) == []
