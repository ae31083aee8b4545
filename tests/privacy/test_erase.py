"""Erase and export a person through the admin API and the CLI, on all three engines: nothing of
the person remains in any table, column or JSON value; another person is untouched."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from firstparty.cli import main
from firstparty.identity import users
from firstparty.store import models as m
from tests.conftest import SECRET, SERVER_KEY, AppClient, base_config, running_app, settings_for
from tests.delivery.outbox import fake_destination
from tests.delivery.receiver import Receiver

ADMIN = {"Authorization": "Bearer admin-token-for-tests"}
PHONE = "+16175550100"
EMAIL = "Jane.Doe@Example.com"
OTHER_EMAIL = "someone.else@example.com"


@pytest.fixture
async def live(database_url: str, receiver: Receiver) -> AsyncIterator[AppClient]:
    settings = settings_for(
        database_url,
        destinations=[fake_destination(receiver.url, batch_size=1)],
        delivery={"sweep_interval_seconds": 0.1},
    )
    async with running_app(settings, run_worker=True) as client:
        yield client


async def send(client: AppClient, **event: Any) -> None:
    body = {"type": "track", "name": "Lead", **event}
    r = await client.http.post("/v1/events", json=body, headers={"X-Write-Key": SERVER_KEY})
    assert r.status_code == 202, r.text


def everything(client: AppClient) -> str:
    """Every value of every row of every table, as text."""
    with client.engine.connect() as conn:
        rows = [
            repr(tuple(row)) for t in m.metadata.sorted_tables for row in conn.execute(sa.select(t))
        ]
    return "\n".join(rows)


async def person(client: AppClient) -> dict[str, str]:
    """A user (verified phone) with two linked devices, their events, click ids and deliveries;
    and someone else. Answers the person's ids and hashes."""
    now = datetime.now(UTC)
    with client.engine.begin() as conn:
        user_id = users.ensure(conn, secret=SECRET, e164=PHONE, now=now)
        for visitor in ("vis_jane_laptop", "vis_jane_phone"):
            users.link_visitor(conn, visitor_id=visitor, user_id=user_id, now=now)
    await send(client, event_id="jane-ev-1", visitor_id="vis_jane_laptop", user={"email": EMAIL})
    await send(
        client,
        event_id="jane-ev-2",
        visitor_id="vis_jane_phone",
        context={"click_ids": {"gclid": "Cj0jane"}},
    )
    await send(client, event_id="jane-ev-3", user={"phone": PHONE})
    await send(client, event_id="o1", visitor_id="vis_other", user={"email": OTHER_EMAIL})
    for _ in range(200):
        tracks = client.rows(m.track_events)
        if len(tracks) >= 4:
            break
        await asyncio.sleep(0.05)
    assert len(client.rows(m.track_events)) == 4
    hashes = users.phone_hashes(PHONE)
    return {
        "user_id": user_id,
        "laptop": "vis_jane_laptop",
        "phone_device": "vis_jane_phone",
        "em": users.pii.sha256("jane.doe@example.com"),
        "ph": hashes["ph"],
        "ph_e164": hashes["ph_e164"],
        "phone_key": users.phone_key(SECRET, PHONE),
        "gclid": "Cj0jane",
        "jane-ev-1": "jane-ev-1",
        "jane-ev-2": "jane-ev-2",
        "jane-ev-3": "jane-ev-3",
    }


async def test_admin_export_then_erase_leaves_nothing_of_the_person(live: AppClient) -> None:
    held = await person(live)
    everything_before = everything(live)
    for value in held.values():
        assert value in everything_before, value

    r = await live.http.get("/v1/admin/privacy/export", params={"email": EMAIL}, headers=ADMIN)
    assert r.status_code == 200, r.text
    exported = r.json()
    assert [u["id"] for u in exported["users"]] == [held["user_id"]]
    assert {v["id"] for v in exported["visitors"]} == {"vis_jane_laptop", "vis_jane_phone"}
    assert {e["event_id"] for e in exported["events"]} == {"jane-ev-1", "jane-ev-2", "jane-ev-3"}
    assert {c["value"] for c in exported["click_ids"]} == {"Cj0jane"}
    assert len(exported["deliveries"]) == 3 and len(exported["device_links"]) == 2

    r = await live.http.post(
        "/v1/admin/privacy/erase", json={"visitor_id": "vis_jane_laptop"}, headers=ADMIN
    )
    assert r.status_code == 200, r.text
    removed = r.json()["removed"]
    assert removed["events"] == 3 and removed["users"] == 1 and removed["visitors"] == 2
    assert removed["tracks"] == 3 and removed["click_ids"] == 1

    after = everything(live)
    for name, value in held.items():
        assert value not in after, name
    assert "vis_other" in after and users.pii.sha256(OTHER_EMAIL) in after
    assert [e["event_id"] for e in live.rows(m.events)] == ["o1"]
    assert len(live.rows(m.tracks)) == 1

    r = await live.http.get(
        "/v1/admin/privacy/export", params={"user_id": held["user_id"]}, headers=ADMIN
    )
    assert all(rows == [] for rows in r.json().values())


async def test_admin_privacy_refuses_bad_input(sqlite_client: AppClient) -> None:
    http = sqlite_client.http
    assert (await http.get("/v1/admin/privacy/export", params={"email": EMAIL})).status_code == 401
    for params in ({}, {"name": "x"}, {"phone": "not a phone"}):
        r = await http.get("/v1/admin/privacy/export", params=params, headers=ADMIN)
        assert r.status_code == 422, (params, r.text)
    r = await http.post("/v1/admin/privacy/erase", json={"email": 5}, headers=ADMIN)
    assert r.status_code == 422
    r = await http.post("/v1/admin/privacy/erase", content=b"[", headers=ADMIN)
    assert r.status_code == 400


async def test_cli_erases_by_phone_and_prints_what_was_removed(
    database_url: str, capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    async with running_app(settings_for(database_url)) as client:
        now = datetime.now(UTC)
        with client.engine.begin() as conn:
            user_id = users.ensure(conn, secret=SECRET, e164=PHONE, now=now)
            users.link_visitor(conn, visitor_id="vis_jane_laptop", user_id=user_id, now=now)
        await send(client, event_id="jane-ev-1", visitor_id="vis_jane_laptop")
    config = tmp_path / "firstparty.toml"
    lines = [f'{k} = "{v}"' for k, v in base_config(database_url).items() if isinstance(v, str)]
    config.write_text("\n".join(lines) + "\n")
    assert main(["--config", str(config), "privacy", "export", "--phone", "(617) 555-0100"]) == 0
    assert '"vis_jane_laptop"' in capsys.readouterr().out
    assert main(["--config", str(config), "privacy", "erase", "--phone", "(617) 555-0100"]) == 0
    out = capsys.readouterr().out
    assert "erased 4 rows" in out and "events" in out
    engine = sa.create_engine(
        database_url.replace("mysql://", "mysql+pymysql://").replace(
            "postgresql://", "postgresql+psycopg://"
        )
    )
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(m.users)).scalar() == 0
        assert conn.execute(sa.select(sa.func.count()).select_from(m.events)).scalar() == 0
    engine.dispose()
    assert main(["--config", str(config), "privacy", "erase"]) == 2
