"""Bad input gets a 4xx naming what is wrong on every public endpoint, never a 500."""

from __future__ import annotations

import pytest

from tests.conftest import SERVER_KEY, AppClient

KEY = {"X-Write-Key": SERVER_KEY, "content-type": "application/json"}
GOOD = b'{"type":"track","event":"Good","messageId":"good-1"}'


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/events", b'{"type":"track","name":"\xff"}'),
        ("/v1/batch", b'{"events":[{"type":"track","name":"\xff"}]}'),
        ("/segment/v1/track", b'{"event":"\xff"}'),
        ("/segment/v1/batch", b'{"batch":[{"type":"track","event":"\xff"}]}'),
        ("/v1/otp/start", b'{"phone":"\xff"}'),
    ],
)
async def test_invalid_utf8_is_refused(sqlite_client: AppClient, path: str, body: bytes) -> None:
    """A 400; in a batch, that message alone is left out."""
    r = await sqlite_client.http.post(path, content=body, headers=KEY)
    assert r.status_code == (200 if "batch" in path else 400), r.text
    assert "UTF-8" in r.text or path == "/v1/otp/start"


async def test_a_segment_time_moved_out_of_range_is_left_out_alone(
    sqlite_client: AppClient,
) -> None:
    bad = b'{"type":"track","event":"x","timestamp":"9999-12-31T23:59:59Z"}'
    body = b'{"sentAt":"0001-01-01T00:00:00Z","batch":[' + bad + b"," + GOOD + b"]}"
    r = await sqlite_client.http.post("/segment/v1/batch", content=body, headers=KEY)
    assert r.status_code == 200, r.text
    [rejected] = r.json()["rejected"]
    assert rejected["index"] == 0 and rejected["details"][0]["field"] == "timestamp"
    r = await sqlite_client.http.post(
        "/segment/v1/track", content=bad[:-1] + b',"sentAt":"0001-01-01"}', headers=KEY
    )
    assert r.status_code == 400 and r.json()["details"][0]["field"] == "timestamp", r.text


async def test_a_zero_timestamp_in_a_segment_batch_loses_no_good_message(
    sqlite_client: AppClient,
) -> None:
    bad = b'{"type":"track","event":"x","timestamp":0}'
    body = b'{"batch":[' + bad + b"," + GOOD + b"]}"
    r = await sqlite_client.http.post("/segment/v1/batch", content=body, headers=KEY)
    assert r.status_code == 200, r.text
    assert [x["index"] for x in r.json()["rejected"]] == [0]


async def test_admin_replay_names_a_field_that_is_not_a_string(sqlite_client: AppClient) -> None:
    token = sqlite_client.settings.admin_token
    if token is None:
        pytest.skip("no admin token in the test settings")
    auth = {"authorization": f"Bearer {token.get_secret_value()}"}
    r = await sqlite_client.http.post("/v1/admin/replay", json={"event": ["x"]}, headers=auth)
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
    sqlite_client: AppClient, path: str, value: bytes, field: str
) -> None:
    named = b'"event":"x"' if path.startswith("/segment") else b'"type":"track","name":"x"'
    body = b"{" + named + b',"properties":{"v":' + value + b"}}"
    r = await sqlite_client.http.post(path, content=body, headers=KEY)
    assert 400 <= r.status_code < 500 and r.json()["details"][0]["field"] == field, r.text
