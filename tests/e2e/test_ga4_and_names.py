"""Issue 11 end to end, through the real app, a real worker and the platform fakes: default
event names (no raw names at the platforms), GA4 sessions, user_data, transaction ids, body
size, and GA4's test mode recorded as `test`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from firstparty.destinations import ga4_mp
from tests.delivery.outbox import eventually
from tests.e2e.journey import (
    PURCHASE_ACTION,
    SITE,
    Browser,
    Deployment,
    Platforms,
    delivery_rows,
    server_send,
    serving,
    sha256,
)

EMAIL, EMAIL_GOOGLE = "Jane.Doe@gmail.com", "janedoe@gmail.com"
PHONE_E164 = "+16175550100"
GA = "GA1.1.1234567890.1767000000"
DONE = {"delivered", "failed", "skipped", "test"}


async def settled(engine: sa.Engine, count: int) -> list[Any]:
    """The delivery rows once there are `count` and none is still on its way."""

    async def done() -> list[Any] | None:
        rows = await asyncio.to_thread(delivery_rows, engine)
        finished = len(rows) >= count and all(r["status"] in DONE for r in rows)
        return rows if finished else None

    await eventually(done, timeout=30)
    return await asyncio.to_thread(delivery_rows, engine)


def without_events(destinations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in d.items() if k != "events"} for d in destinations]


def ga_session(platforms: Platforms, started: int) -> str:
    container = platforms.ga4.measurement_id.removeprefix("G-")
    return f"OTHER9:1700000000:4,{container}:{started}:2"


async def test_without_a_mapping_platforms_get_their_standard_names_and_nothing_raw(
    deployment: Deployment, platforms: Platforms
) -> None:
    settings = deployment.settings(destinations=without_events(platforms.destinations()))
    order = f"order-{uuid.uuid4().hex[:8]}"
    async with serving(settings) as app:
        async with Browser(app) as laptop:
            context = {"ga": GA}
            await laptop.send(
                {"type": "page", "url": f"{SITE}/?gclid=Cj0-names", "context": context}
            )
            await laptop.send({"type": "identify", "url": f"{SITE}/", "user": {"email": EMAIL}})
            await laptop.send({"type": "track", "name": "Signed Up", "url": f"{SITE}/welcome"})
            await laptop.send({"type": "track", "name": "Custom Thing", "url": f"{SITE}/x"})
            bought = await laptop.send(
                {
                    "type": "track",
                    "name": "Order Completed",
                    "url": f"{SITE}/thanks",
                    "user": {"email": EMAIL},
                    "properties": {"value": 99.5, "currency": "usd", "order_id": order},
                    "context": context,
                }
            )
        # page: meta, tiktok; Signed Up: meta, tiktok, ga4; Order Completed: all four.
        rows = await settled(app.engine, count=9)

    routed = {(r["event_id"], r["destination"]) for r in rows}
    assert len(routed) == 9
    assert {r["status"] for r in rows} == {"delivered"}, [
        (r["destination"], r["last_error"]) for r in rows
    ]
    assert sorted(e["event_name"] for e in platforms.meta.events) == [
        "CompleteRegistration",
        "PageView",
        "Purchase",
    ]
    assert sorted(e["event"] for e in platforms.tiktok.events) == [
        "CompleteRegistration",
        "Pageview",
        "Purchase",
    ]
    assert sorted(a["event"]["name"] for a in platforms.ga4.accepted) == ["purchase", "sign_up"]
    [purchase] = platforms.ga4_events("purchase")
    assert purchase["event"]["params"]["transaction_id"] == order
    assert purchase["event"]["params"]["currency"] == "USD"
    assert [action for action, _ in platforms.google.ingested] == [PURCHASE_ACTION]
    assert [event_id for _, event_id in platforms.google.ingested] == [bought["event_id"]]


async def test_ga4_hits_carry_the_session_user_data_and_engagement_time(
    deployment: Deployment, platforms: Platforms
) -> None:
    settings = deployment.settings(destinations=platforms.destinations()[3:])  # GA4 alone
    started = int(time.time()) - 60
    async with serving(settings) as app:
        async with Browser(app) as laptop:  # gtag on the page: its session cookie
            context = {"ga": GA, "ga_session": ga_session(platforms, started)}
            await laptop.send({"type": "page", "url": f"{SITE}/", "context": context})
            await laptop.send(
                {
                    "type": "track",
                    "name": "Lead",
                    "url": f"{SITE}/contact",
                    "user": {"email": EMAIL, "phone": PHONE_E164},
                    "context": context,
                }
            )
        async with Browser(app, ip="198.51.100.99") as phone:  # no gtag: the server's session
            await phone.send({"type": "page", "url": f"{SITE}/m"})
            await phone.send({"type": "track", "name": "Lead", "url": f"{SITE}/m/contact"})
        await settled(app.engine, count=4)

    cookie = [a for a in platforms.ga4.accepted if a["client_id"] == "1234567890.1767000000"]
    assert [a["event"]["params"]["session_id"] for a in cookie] == [str(started)] * 2
    server = [a for a in platforms.ga4.accepted if a not in cookie]
    assert len(server) == 2
    [server_session] = {a["event"]["params"]["session_id"] for a in server}
    assert abs(int(server_session) - time.time()) < 120  # started by the page view, just now
    assert all(a["event"]["params"]["engagement_time_msec"] >= 1 for a in platforms.ga4.accepted)
    assert platforms.ga4.unassigned == []  # every hit lands in a session
    [lead] = [a for a in cookie if a["event"]["name"] == "generate_lead"]
    assert lead["user_data"] == {
        "sha256_email_address": [sha256(EMAIL_GOOGLE)],  # Google's gmail rule, then hashed
        "sha256_phone_number": [sha256(PHONE_E164)],
    }
    assert platforms.ga4.messages == []


async def test_ga4_validate_mode_is_recorded_test_and_counts_nothing(
    deployment: Deployment, platforms: Platforms
) -> None:
    ga4 = platforms.destinations()[3] | {"validate": True}
    settings = deployment.settings(destinations=[ga4])
    async with serving(settings) as app:
        async with Browser(app) as laptop:
            await laptop.send(
                {"type": "track", "name": "Lead", "url": f"{SITE}/", "context": {"ga": GA}}
            )
            await laptop.send({"type": "track", "name": "_bad", "url": f"{SITE}/"})  # not mapped
        [row] = await settled(app.engine, count=1)
    assert row["status"] == "test" and "validate mode: not recorded" in row["last_error"]
    assert platforms.ga4.accepted == []
    assert [r.path for r in platforms.ga4.requests] == ["/debug/mp/collect"]


async def test_a_burst_too_large_for_one_ga4_body_reaches_ga4_whole(
    deployment: Deployment, platforms: Platforms
) -> None:
    settings = deployment.settings(destinations=platforms.destinations()[3:])
    big = {f"p{i}": "x" * 100 for i in range(20)}
    items = [{"item_id": f"SKU-{i}", **{f"k{j}": "y" * 90 for j in range(9)}} for i in range(15)]
    count = 24
    async with serving(settings) as app:
        await asyncio.gather(
            *(
                server_send(
                    app,
                    {
                        "type": "track",
                        "name": "Purchase",
                        "user_id": "u_burst",
                        "properties": {**big, "items": items, "value": 1, "currency": "EUR"},
                        "timestamp": datetime.now(UTC).isoformat(),
                    },
                )
                for _ in range(count)
            )
        )
        rows = await settled(app.engine, count=count)
    assert {r["status"] for r in rows} == {"delivered"}
    assert platforms.ga4.dropped == 0
    assert len(platforms.ga4_events("purchase")) == count
    sizes = [len(r.body) for r in platforms.ga4.requests]
    assert max(sizes) < ga4_mp.MAX_BODY_BYTES < sum(sizes)  # more than one body's worth
