"""Malformed admin API fields get a 422 naming the field on every engine, never a 500; the admin
UI's filters and cursors likewise get an error page."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.api.test_admin import ADMIN, send
from tests.conftest import AppClient
from tests.web.test_admin_ui import signed_in_page

BAD_TIMES = [
    "garbage",
    "0001-01-01",
    "9999-12-31T99",
    "9999-12-31T23:59:59-05:00",  # past year 9999 once in UTC
    "1e400",
    "99999999999999999999999",
    "NaN",
    "2024-01-01\x00",
    "٢٠٢٤-01-01",
    "x" * 5000,
]
BAD_LIMITS = ["-1", "0", "1001", "1e3", "abc", "²", "9" * 5000, " 5", "0x10", ""]
BAD_TRACK_CURSORS = ["-1", "abc", "²", "99999999999999999999", "9223372036854775808", "1.5"]
BAD_EVENT_CURSORS = ["'; drop table events; --", "a" * 65, "\x00", "💥", "../x"]
BAD_TEXT = ["\x00", "a\x00b", "x" * 257]


def _field(response: Any) -> str:
    assert response.status_code == 422, (response.status_code, response.text)
    [detail] = response.json()["details"]
    return str(detail["field"])


async def test_malformed_query_fields_are_422_naming_the_field(app_client: AppClient) -> None:
    await send(app_client, "seed-1")
    http = app_client.http
    for path in ("/v1/admin/events", "/v1/admin/tracks"):
        for name in ("since", "until"):
            for value in BAD_TIMES:
                r = await http.get(path, params={name: value}, headers=ADMIN)
                assert _field(r) == name, (path, name, value)
        for value in BAD_LIMITS:
            r = await http.get(path, params={"limit": value}, headers=ADMIN)
            assert _field(r) == "limit", (path, value)
    for value in BAD_TRACK_CURSORS:
        r = await http.get("/v1/admin/tracks", params={"cursor": value}, headers=ADMIN)
        assert _field(r) == "cursor", value
    for value in BAD_EVENT_CURSORS:
        r = await http.get("/v1/admin/events", params={"cursor": value}, headers=ADMIN)
        assert _field(r) == "cursor", value
    for value in ("nope", "DELIVERED", "\x00", "inflight"):
        r = await http.get("/v1/admin/tracks", params={"status": value}, headers=ADMIN)
        assert _field(r) == "status", value
    for name in ("name", "source"):
        for value in BAD_TEXT:
            r = await http.get("/v1/admin/events", params={name: value}, headers=ADMIN)
            assert _field(r) == name, (name, value)
    for name in ("visitor_id", "user_id"):
        r = await http.get("/v1/admin/events", params={name: "a\x00"}, headers=ADMIN)
        assert _field(r) == name
    for name in ("destination", "event_id"):
        r = await http.get("/v1/admin/tracks", params={name: "\x00"}, headers=ADMIN)
        assert _field(r) == name


async def test_well_formed_but_unknown_values_are_empty_pages(app_client: AppClient) -> None:
    """A cursor or filter that matches nothing is not an error: an empty page."""
    await send(app_client, "seed-1")
    http = app_client.http
    for path, params in (
        ("/v1/admin/events", {"cursor": "00000000000000000000000000"}),
        ("/v1/admin/events", {"name": "💥 émoji", "source": "x" * 256}),
        ("/v1/admin/tracks", {"cursor": "9223372036854775807", "event_id": "💥"}),
        ("/v1/admin/events", {"since": "9998-12-31T00:00:00Z", "until": "1970-01-01"}),
    ):
        r = await http.get(path, params=params, headers=ADMIN)
        assert r.status_code == 200 and r.json() == {"items": [], "next_cursor": None}, params
    for pk in ("%00", "x" * 300, "💥"):
        assert (await http.get(f"/v1/admin/events/{pk}", headers=ADMIN)).status_code == 404


REPLAY_CASES: list[tuple[Any, str]] = [
    ({"since": "0001-01-01"}, "since"),
    ({"until": "9999-12-31T99"}, "until"),
    ({"since": "garbage"}, "since"),
    ({"since": 12}, "since"),
    ({"event": "\x00"}, "event"),
    ({"event": "x" * 257}, "event"),
    ({"destination": "nope"}, "destination"),
    ({"destination": 5}, "destination"),
    ({"dry_run": {"x": 1}}, "dry_run"),
    ({"dry_run": "maybe"}, "dry_run"),
    ({"other": 1}, "other"),
    ([1, 2], "(body)"),
]


async def test_malformed_replay_fields_are_422_naming_the_field(app_client: AppClient) -> None:
    http = app_client.http
    for body, field in REPLAY_CASES:
        r = await http.post("/v1/admin/replay", content=json.dumps(body), headers=ADMIN)
        assert _field(r) == field, body
    r = await http.post("/v1/admin/replay?since=0001-01-01", headers=ADMIN)
    assert _field(r) == "since"
    for raw in (b"[" * 100_000, b"{bad", b"\xff\xfe", b'{"since": NaN}'):
        r = await http.post("/v1/admin/replay", content=raw, headers=ADMIN)
        assert 400 <= r.status_code < 500, (raw[:10], r.status_code)
    ok = await http.post("/v1/admin/replay", json={"dry_run": True}, headers=ADMIN)
    assert ok.status_code == 200 and ok.json()["dry_run"] is True


async def test_privacy_fields_with_nul_are_422(app_client: AppClient) -> None:
    for name in ("visitor_id", "user_id"):
        r = await app_client.http.get(
            "/v1/admin/privacy/export", params={name: "a\x00"}, headers=ADMIN
        )
        assert _field(r) == name


@pytest.mark.parametrize(
    "path",
    [
        "/admin/?cursor=%00",
        "/admin/?cursor=" + "a" * 65,
        "/admin/?name=%00",
        "/admin/?visitor_id=a%00",
        "/admin/deliveries?cursor=99999999999999999999",
        "/admin/deliveries?cursor=-1",
        "/admin/deliveries?event_id=%00",
        "/admin/events/%00",
    ],
)
async def test_the_admin_ui_answers_an_error_page_for_malformed_fields(
    app_client: AppClient, path: str
) -> None:
    await signed_in_page(app_client.http)
    r = await app_client.http.get(path)
    assert r.status_code == 422 and r.headers["content-type"].startswith("text/html"), r.text
    assert "must be" in r.text
