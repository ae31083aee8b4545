"""Issue 13: a request's validation errors come back all at once, each naming its field, with
string lengths in characters; nothing is stored."""

from __future__ import annotations

from firstparty.store.models import events
from tests.conftest import SERVER_KEY, AppClient


async def test_every_field_that_does_not_fit_is_named(app_client: AppClient) -> None:
    body = {
        "type": "track",
        "name": "",
        "event_id": "x" * 200,
        "user": {"email": 5, "nickname": "a"},
        "consent": {"ad_user_data": "yes"},
        "colour": "red",
    }
    r = await app_client.http.post("/v1/events", headers={"X-Write-Key": SERVER_KEY}, json=body)
    assert r.status_code == 422
    details = {d["field"]: d["message"] for d in r.json()["details"]}
    assert details == {
        "colour": "unknown field",
        "name": "expected a string of at least 1 character",
        "event_id": "expected a string of at most 128 characters",
        "user.nickname": "unknown field",
        "user.email": "Expected `str | null`, got `int`",
        "consent.ad_user_data": "Invalid enum value 'yes'",
    }
    assert app_client.rows(events) == []


async def test_a_missing_type_is_named(app_client: AppClient) -> None:
    r = await app_client.http.post(
        "/v1/events", headers={"X-Write-Key": SERVER_KEY}, json={"name": "Lead"}
    )
    assert r.status_code == 422
    assert r.json()["details"] == [{"field": "type", "message": "required"}]
