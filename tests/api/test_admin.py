"""The admin API through the real app: auth, events, tracks, paging and replay."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import SERVER_KEY, AppClient, running_app, settings_for
from tests.delivery.outbox import API_KEY, fake_destination
from tests.delivery.receiver import Receiver

ADMIN = {"Authorization": "Bearer admin-token-for-tests"}
FAST = {"backoff_base_seconds": 0.01, "backoff_max_seconds": 0.05, "sweep_interval_seconds": 0.1}


@pytest.fixture
async def live(database_url: str, receiver: Receiver) -> AsyncIterator[AppClient]:
    """The app with its embedded worker delivering to a fake receiver that rejects 'bad-*'."""
    settings = settings_for(
        database_url,
        destinations=[fake_destination(receiver.url, max_attempts=2, batch_size=1)],
        delivery=FAST,
    )
    async with running_app(settings, run_worker=True) as client:
        yield client


async def send(client: AppClient, event_id: str, name: str = "Lead") -> dict[str, Any]:
    body = {"type": "track", "name": name, "event_id": event_id}
    r = await client.http.post("/v1/events", json=body, headers={"X-Write-Key": SERVER_KEY})
    assert r.status_code == 202
    result: dict[str, Any] = r.json()
    return result


async def settled(client: AppClient, count: int) -> list[dict[str, Any]]:
    """Waits (bounded) until `count` deliveries are no longer pending."""
    for _ in range(200):
        tracks = (await client.http.get("/v1/admin/tracks?limit=1000", headers=ADMIN)).json()
        events = (await client.http.get("/v1/admin/events?limit=1000", headers=ADMIN)).json()
        details = [
            (await client.http.get(f"/v1/admin/events/{e['id']}", headers=ADMIN)).json()
            for e in events["items"]
        ]
        done = [
            d
            for d in details
            if d["deliveries"] and d["deliveries"][0]["status"] not in ("pending", "inflight")
        ]
        if len(done) >= count and tracks["items"]:
            return details
        await asyncio.sleep(0.05)
    raise AssertionError("deliveries did not settle")


async def test_admin_needs_the_token(sqlite_client: AppClient) -> None:
    for path in ("/v1/admin/events", "/v1/admin/tracks", "/v1/admin/events/x"):
        assert (await sqlite_client.http.get(path)).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert (await sqlite_client.http.get(path, headers=wrong)).status_code == 401
    assert (await sqlite_client.http.post("/v1/admin/replay")).status_code == 401


async def test_admin_refuses_all_without_a_configured_token(sqlite_url: str) -> None:
    async with running_app(settings_for(sqlite_url, admin_token=None)) as client:
        r = await client.http.get("/v1/admin/events", headers=ADMIN)
        assert r.status_code == 401 and "FIRSTPARTY_ADMIN_TOKEN" in r.json()["error"]


async def test_events_paging_and_filters(sqlite_client: AppClient) -> None:
    for i in range(7):
        await send(sqlite_client, f"p-{i}", name="Lead" if i % 2 else "Signup")
    seen: list[str] = []
    cursor = None
    while True:
        query = "/v1/admin/events?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = (await sqlite_client.http.get(query, headers=ADMIN)).json()
        seen += [item["event_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(f"p-{i}" for i in range(7)) and len(seen) == 7
    leads = (await sqlite_client.http.get("/v1/admin/events?name=Lead", headers=ADMIN)).json()
    assert {i["event_id"] for i in leads["items"]} == {"p-1", "p-3", "p-5"}
    assert all(i["source"] == "crm" for i in leads["items"])
    bad = await sqlite_client.http.get("/v1/admin/events?limit=5000", headers=ADMIN)
    assert bad.status_code == 422 and bad.json()["details"][0]["field"] == "limit"
    bad = await sqlite_client.http.get("/v1/admin/events?since=soon", headers=ADMIN)
    assert bad.status_code == 422 and bad.json()["details"][0]["field"] == "since"
    missing = await sqlite_client.http.get("/v1/admin/events/nope", headers=ADMIN)
    assert missing.status_code == 404


async def test_tracks_name_their_events_and_replay_resends_failed(
    live: AppClient, receiver: Receiver
) -> None:
    receiver.reject["bad-1"] = "invalid parameter: value"
    await send(live, "good-1")
    await send(live, "bad-1")
    details = {d["event_id"]: d for d in await settled(live, 2)}
    assert details["good-1"]["deliveries"][0]["status"] == "delivered"
    failed = details["bad-1"]["deliveries"][0]
    assert failed["status"] == "failed" and "invalid parameter" in failed["last_error"]
    assert details["bad-1"]["tracks"], "the failed request is in the event's log"

    tracks = (await live.http.get("/v1/admin/tracks?status=failed", headers=ADMIN)).json()
    assert tracks["items"] and all("bad-1" in t["event_ids"] for t in tracks["items"])
    by_event = (await live.http.get("/v1/admin/tracks?event_id=good-1", headers=ADMIN)).json()
    assert [t["status"] for t in by_event["items"]] == ["delivered"]
    logged = by_event["items"][0]
    assert API_KEY not in str(logged["url"]) and API_KEY not in str(logged["request"])
    bad = await live.http.get("/v1/admin/tracks?status=lost", headers=ADMIN)
    assert bad.status_code == 422

    # The cause is fixed; replay re-sends the failed work, and only it.
    receiver.reject.clear()
    dry = await live.http.post("/v1/admin/replay?dry_run=true", headers=ADMIN)
    assert dry.json() == {"matched": 1, "requeued": 1, "skipped": {}, "dry_run": True}
    r = await live.http.post("/v1/admin/replay", json={"destination": "fake"}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["requeued"] == 1
    for _ in range(200):
        detail = await live.http.get(f"/v1/admin/events/{details['bad-1']['id']}", headers=ADMIN)
        if detail.json()["deliveries"][0]["status"] == "delivered":
            break
        await asyncio.sleep(0.05)
    assert detail.json()["deliveries"][0]["status"] == "delivered"
    again = await live.http.post("/v1/admin/replay", headers=ADMIN)
    assert again.json()["matched"] == 0 and again.json()["requeued"] == 0
    accepted = [e["event_id"] for e in receiver.accepted]
    assert sorted(accepted) == ["bad-1", "good-1"]

    unknown = await live.http.post("/v1/admin/replay", json={"destination": "x"}, headers=ADMIN)
    assert unknown.status_code == 422 and unknown.json()["details"][0]["field"] == "destination"
    extra = await live.http.post("/v1/admin/replay", json={"colour": "red"}, headers=ADMIN)
    assert extra.status_code == 422


async def test_a_long_body_is_left_out_of_the_list_and_whole_in_its_own_answer(
    database_url: str,
) -> None:
    """An audience sync's or a platform batch's request body is hundreds of KB: the list leaves
    a body over 16,384 bytes out unread (marked, with its size), and GET /v1/admin/tracks/{id}
    answers it whole. A row logged before sizes were kept is listed whole, as before."""
    from datetime import UTC, datetime

    import sqlalchemy as sa

    from firstparty.delivery import track
    from firstparty.store import models as m

    members = [f"{n:064x}" for n in range(600)]  # about 40 KB of hashes
    long_body = {"payload": {"data": members}}
    short_body = {"events": [{"name": "Lead", "value": "49.90"}]}
    rows = [(long_body, None), (long_body, track.body_bytes(long_body))]
    rows += [(short_body, track.body_bytes(short_body)), (None, None)]
    async with running_app(settings_for(database_url)) as client:
        with client.engine.begin() as conn:
            for body, size in rows:
                conn.execute(
                    sa.insert(m.tracks).values(
                        destination="meta-leads", status="delivered", attempt=1, method="POST",
                        url="https://graph.example/users", request=body, request_bytes=size,
                        response_status=200, created_at=datetime.now(UTC),
                    )
                )  # fmt: skip
        listed = (await client.http.get("/v1/admin/tracks", headers=ADMIN)).json()["items"]
        nothing, short, long, before = listed
        assert nothing["request"] is None and nothing["request_truncated"] is False
        assert short["request"] == short_body and short["request_truncated"] is False
        assert short["request_bytes"] == len(json.dumps(short_body, separators=(",", ":")))
        assert long["request"] is None and long["request_truncated"] is True
        assert long["request_bytes"] > 30_000
        assert before["request"] == long_body and before["request_bytes"] is None
        whole = (await client.http.get(f"/v1/admin/tracks/{long['id']}", headers=ADMIN)).json()
        assert whole["request"] == long_body and whole["event_ids"] == []
        assert whole["request_truncated"] is False and "cursor" not in whole
        for wrong in ("0", "x", "99999999", "9" * 30):
            answer = await client.http.get(f"/v1/admin/tracks/{wrong}", headers=ADMIN)
            assert answer.status_code == 404, wrong
        assert (await client.http.get(f"/v1/admin/tracks/{long['id']}")).status_code == 401
