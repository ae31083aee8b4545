"""Bad input gets a 4xx naming what is wrong on every public endpoint, never a 500.

Every test runs on SQLite, PostgreSQL and MariaDB (`app_client`): what one engine refuses at
the database must be refused at the door on all of them.
"""

from __future__ import annotations

import pytest

from firstparty.store import models as m
from tests.conftest import SERVER_KEY, AppClient

KEY = {"X-Write-Key": SERVER_KEY, "content-type": "application/json"}
ADMIN = {"authorization": "Bearer admin-token-for-tests", "content-type": "application/json"}
GOOD = b'{"type":"track","event":"Good","messageId":"good-1"}'


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/events", b'{"type":"track","name":"\xff"}'),
        ("/v1/batch", b'{"events":[{"type":"track","name":"\xff"}]}'),
        ("/segment/v1/track", b'{"event":"\xff"}'),
        ("/segment/v1/batch", b'{"batch":[{"type":"track","event":"\xff"}]}'),
        ("/v1/otp/start", b'{"phone":"\xff"}'),
        # In a key: a field the typed decoders skip or refuse before reading its bytes.
        ("/v1/batch", b'{"events":[{"\xff":"0001-01-01"}]}'),
        ("/segment/v1/identify", b'{"\xffuserId":"0001-01-01"}'),
        ("/segment/v1/batch", b'{"batch":[{"type":"track","event":"x","\xff":1}]}'),
    ],
)
async def test_invalid_utf8_is_refused(app_client: AppClient, path: str, body: bytes) -> None:
    """A 400; in a batch, that message alone is left out."""
    r = await app_client.http.post(path, content=body, headers=KEY)
    assert r.status_code == (200 if "batch" in path else 400), r.text
    assert "UTF-8" in r.text or path == "/v1/otp/start"


async def test_invalid_utf8_in_an_admin_api_key_is_a_400(app_client: AppClient) -> None:
    """A lone surrogate (CESU-8) in a field name was echoed into the 422 and failed to encode."""
    body = b'{"\xed\xa0\x80user_id":"u"}'
    r = await app_client.http.post("/v1/admin/privacy/erase", content=body, headers=ADMIN)
    assert r.status_code == 400, r.text


async def test_a_segment_time_moved_out_of_range_is_left_out_alone(
    app_client: AppClient,
) -> None:
    bad = b'{"type":"track","event":"x","timestamp":"9999-12-31T23:59:59Z"}'
    body = b'{"sentAt":"0001-01-01T00:00:00Z","batch":[' + bad + b"," + GOOD + b"]}"
    r = await app_client.http.post("/segment/v1/batch", content=body, headers=KEY)
    assert r.status_code == 200, r.text
    [rejected] = r.json()["rejected"]
    assert rejected["index"] == 0 and rejected["details"][0]["field"] == "timestamp"
    r = await app_client.http.post(
        "/segment/v1/track", content=bad[:-1] + b',"sentAt":"0001-01-01"}', headers=KEY
    )
    assert r.status_code == 400 and r.json()["details"][0]["field"] == "timestamp", r.text


async def test_a_zero_timestamp_in_a_segment_batch_loses_no_good_message(
    app_client: AppClient,
) -> None:
    bad = b'{"type":"track","event":"x","timestamp":0}'
    body = b'{"batch":[' + bad + b"," + GOOD + b"]}"
    r = await app_client.http.post("/segment/v1/batch", content=body, headers=KEY)
    assert r.status_code == 200, r.text
    assert [x["index"] for x in r.json()["rejected"]] == [0]


async def test_admin_replay_names_a_field_that_is_not_a_string(app_client: AppClient) -> None:
    auth = ADMIN
    r = await app_client.http.post("/v1/admin/replay", json={"event": ["x"]}, headers=auth)
    assert r.status_code == 422 and r.json()["details"][0]["field"] == "event", r.text


@pytest.mark.parametrize(
    ("value", "field"),
    [
        (b"123456789012345678901234567890", "properties.v"),
        (b"[" * 40 + b"]" * 40, "properties.v" + ".0" * 31),
    ],
)
@pytest.mark.parametrize("path", ["/v1/events", "/segment/v1/track"])
async def test_deep_nesting_and_huge_integers_are_named(
    app_client: AppClient, path: str, value: bytes, field: str
) -> None:
    named = b'"event":"x"' if path.startswith("/segment") else b'"type":"track","name":"x"'
    body = b"{" + named + b',"properties":{"v":' + value + b"}}"
    r = await app_client.http.post(path, content=body, headers=KEY)
    assert 400 <= r.status_code < 500 and r.json()["details"][0]["field"] == field, r.text


TRACK = b'"type":"track","name":"x"'
SEGMENT = b'"event":"x","userId":"u"'
OUT_OF_RANGE = "number out of range"


NAMED = [  # (path, body, the field named, words of its message)
    ("/v1/events", b"{" + TRACK + b',"properties":{"v":NaN}}', "properties.v", OUT_OF_RANGE),
    ("/v1/events", b"{" + TRACK + b',"properties":{"v":1e999}}', "properties.v", OUT_OF_RANGE),
    ("/v1/events", b"{" + TRACK + b',"properties":{"a":[-Infinity]}}', "properties.a.0", "NaN"),
    ("/v1/events", b"{" + TRACK + b',"timestamp":1e999}', "timestamp", OUT_OF_RANGE),
    ("/v1/events", b"{" + TRACK + b',"NaN":1}', "NaN", "unknown field"),
    ("/v1/events", b"{" + TRACK + b',"timestamp":"0001-01-01T00:00:00Z"}', "timestamp", ""),
    ("/v1/events", b"{" + TRACK + b',"timestamp":"9999-12-31T23:59:59Z"}', "timestamp", ""),
    ("/v1/events", b"{" + TRACK + b',"timestamp":-62135596800}', "timestamp", ""),
    ("/segment/v1/track", b"{" + SEGMENT + b',"properties":{"v":NaN}}', "properties.v", ""),
    ("/segment/v1/track", b"{" + SEGMENT + b',"properties":{"v":1e999}}', "properties.v", ""),
    ("/segment/v1/track", b'{"event":"x","userId":-1e999}', "userId", OUT_OF_RANGE),
    ("/segment/v1/identify", b'{"userId":"u","traits":{"NaN":Infinity}}', "traits.NaN", ""),
    (
        "/segment/v1/track",
        b"{" + SEGMENT + b',"timestamp":"0001-01-01T00:00:00Z"}',
        "timestamp",
        "",
    ),
    (
        "/segment/v1/track",
        b"{" + SEGMENT + b',"timestamp":"9999-12-31T23:59:59Z"}',
        "timestamp",
        "",
    ),
    ("/v1/otp/start", b'{"phone":NaN}', "phone", OUT_OF_RANGE),
    ("/v1/otp/start", b'{"phone":1e999}', "phone", ""),
    ("/v1/otp/start", b'{"phone":"+1 202\\u0000555 0100"}', "phone", ""),
    ("/v1/otp/verify", b'{"phone":"+12025550100","code":1e999}', "code", ""),
    ("/v1/admin/replay", b'{"since":NaN}', "since", ""),
    ("/v1/admin/replay", b'{"until":1e999}', "until", ""),
    ("/v1/admin/replay", b'{"since":"0001-01-01T00:00:00Z"}', "since", "between"),
    ("/v1/admin/replay", b'{"until":"9999-12-31T23:59:59Z"}', "until", "between"),
    ("/v1/admin/replay", b'{"destination":"a\\u0000b"}', "destination", "NUL"),
    ("/v1/admin/replay", b'{"NaN":1}', "NaN", "unknown field"),
    ("/v1/admin/privacy/erase", b'{"user_id":"a\\u0000b"}', "user_id", ""),
    ("/v1/admin/privacy/erase", b'{"email":1e999}', "email", ""),
    ("GET /v1/admin/events?since=0001-01-01T00:00:00Z", b"", "since", "between"),
    ("GET /v1/admin/events?until=9999-12-31T23:59:59Z", b"", "until", "between"),
    ("GET /v1/admin/events?since=NaN", b"", "since", ""),
    ("GET /v1/admin/events?limit=Infinity", b"", "limit", ""),
    ("GET /v1/admin/events?name=a%00b", b"", "name", "NUL"),
    ("GET /v1/admin/tracks?event_id=a%00b", b"", "event_id", "NUL"),
    ("GET /v1/admin/tracks?since=-1e999", b"", "since", ""),
    ("GET /v1/admin/privacy/export?email=a%00b", b"", "email", ""),
]


async def test_non_finite_numbers_out_of_range_times_and_nul_are_named(
    app_client: AppClient,
) -> None:
    """NaN, Infinity and 1e999, times before 1970 or in year 9999, NUL where an id or a filter
    is expected: a 4xx naming the field, and nothing stored (one app per engine, every case)."""
    wrong = []
    for path, body, field, words in NAMED:
        headers = ADMIN if "/admin/" in path else KEY
        if path.startswith("GET "):
            r = await app_client.http.get(path[4:], headers=headers)
        else:
            r = await app_client.http.post(path, content=body, headers=headers)
        details = r.json().get("details") or [{}]
        named = details[0].get("field") == field and words in details[0].get("message", "")
        if not (400 <= r.status_code < 500 and named):
            wrong.append(f"{path} {body!r}: {r.status_code} {r.text}")
    assert not wrong, "\n".join(wrong)
    assert app_client.rows(m.events) == []


@pytest.mark.parametrize(
    "path",
    ["/v1/events", "/segment/v1/track"],
)
async def test_nul_in_strings_and_keys_is_cleaned_alike_on_every_engine(
    app_client: AppClient, path: str
) -> None:
    """NUL characters are removed on arrival (README): stored the same on every engine."""
    named = (
        b'"event":"Le\\u0000ad","userId":"u1"'
        if "segment" in path
        else b'"type":"track","name":"Le\\u0000ad"'
    )
    body = b"{" + named + b',"properties":{"k\\u0000ey":"va\\u0000lue","NaN":"x"}}'
    r = await app_client.http.post(path, content=body, headers=KEY)
    assert r.status_code in (200, 202), r.text
    [row] = app_client.rows(m.events)
    assert row["name"] == "Lead"
    assert row["request"]["properties"]["key"] == "value"
    assert row["request"]["properties"]["NaN"] == "x"  # a NaN-ish name is only a name
