"""Segment's anonymousId and non-standard traits never reach a table in clear, through the real
/segment/* endpoints on every engine: hashed (or dropped, when not text or a number)."""

from __future__ import annotations

import sqlalchemy as sa

from firstparty.identity import pii
from firstparty.store import models as m
from tests.conftest import BROWSER_KEY, SERVER_KEY, AppClient
from tests.segment.wire import basic

ANON = "anon-7f3c2e1d-a6b9-4c11-9d3e-clearvalue"
TRAITS = {
    "email": "ada@example.com",
    "username": "ada_the_countess",
    "loyaltyCard": "LC-99812345",
    "title": "Analyst Engine Designer",
    "nested": {"ssn": "078-05-1120"},
    "plan": "pro",
}
CLEAR = [
    "anon-7f3c2e1d",
    "clearvalue",
    "ada_the_countess",
    "LC-99812345",
    "Analyst Engine",
    "078-05-1120",
]


def everything(client: AppClient) -> str:
    with client.engine.connect() as conn:
        return "\n".join(
            repr(tuple(row)) for t in m.metadata.sorted_tables for row in conn.execute(sa.select(t))
        )


async def test_anonymous_id_and_custom_traits_are_never_stored_in_clear(
    app_client: AppClient,
) -> None:
    for key, prefix in ((SERVER_KEY, "s"), (BROWSER_KEY, "b")):
        batch = [
            {"type": "identify", "messageId": f"{prefix}1", "anonymousId": ANON, "traits": TRAITS},
            {
                "type": "track",
                "event": "Lead",
                "messageId": f"{prefix}2",
                "anonymousId": ANON,
                "context": {"traits": TRAITS},
            },
            {"type": "group", "messageId": f"{prefix}3", "anonymousId": ANON, "traits": TRAITS},
        ]
        r = await app_client.http.post(
            "/segment/v1/batch",
            json={"batch": batch},
            headers={**basic(key), "Origin": "https://www.example.test"},
        )
        assert r.json() == {"success": True}, r.text
        r = await app_client.http.post(
            "/segment/v1/t",
            json={"event": "Lead", "messageId": f"{prefix}4", "anonymousId": ANON, "writeKey": key},
            headers={"Origin": "https://www.example.test"},
        )
        assert r.status_code == 200, r.text
    stored = everything(app_client)
    for clear in CLEAR:
        assert clear not in stored, clear
    rows = app_client.rows(m.events)
    assert len(rows) == 8
    identify = next(row for row in rows if row["event_id"] == "s1")
    kept = identify["request"]["segment"]
    assert kept["traits"] == identify["request"]["properties"]
    assert kept["traits"]["plan"] == "pro"  # describes the account, names no one: kept
    assert kept["traits"]["username"] == "sha256:" + pii.sha256("ada_the_countess")
    assert "nested" not in kept["traits"] and "email" not in kept["traits"]
    assert kept["anonymousId"] == identify["visitor_id"] == "s_" + pii.sha256(ANON)[:22]
