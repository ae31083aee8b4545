"""The public surface is pinned: every mounted route is in /openapi.json."""

from __future__ import annotations

from starlette.routing import Route

from firstparty.app import route_modules
from tests.conftest import AppClient


async def test_every_route_is_documented(sqlite_client: AppClient) -> None:
    doc = (await sqlite_client.http.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    mounted = {r.path for module in route_modules() for r in module if isinstance(r, Route)}
    undocumented = {p for p in mounted if p not in doc["paths"] and not p.startswith("/demo")}
    assert not undocumented, f"document these in firstparty/api/openapi.py: {undocumented}"
    assert "EventIn" in doc["components"]["schemas"]
    for path in ("/v1/events", "/v1/batch"):
        codes = set(doc["paths"][path]["post"]["responses"])
        assert {"400", "401", "403", "413", "422", "429"} <= codes


async def test_collect_answers_document_their_warnings(sqlite_client: AppClient) -> None:
    doc = (await sqlite_client.http.get("/openapi.json")).json()
    schemas = doc["components"]["schemas"]
    warnings = schemas["Accepted"]["properties"]["warnings"]
    assert warnings["items"] == {"$ref": "#/components/schemas/ErrorDetail"}
    assert "warnings" not in schemas["Accepted"]["required"]
    assert "click_ids" in schemas["Context"]["properties"]
    ok = doc["paths"]["/v1/events"]["post"]["responses"]["202"]
    assert "warnings" in ok["description"]
    segment_ok = doc["paths"]["/segment/v1/track"]["post"]["responses"]["200"]
    assert "warnings" in segment_ok["description"]


async def test_health_and_ready(sqlite_client: AppClient) -> None:
    assert (await sqlite_client.http.get("/healthz")).json() == {"ok": True}
    ready = await sqlite_client.http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["database"] == "ok"


async def test_metrics_count_events(sqlite_client: AppClient) -> None:
    from tests.conftest import SERVER_KEY

    headers = {"X-Write-Key": SERVER_KEY}
    await sqlite_client.http.post("/v1/events", json={"type": "page"}, headers=headers)
    await sqlite_client.http.post("/v1/events", json={"type": "nope"}, headers=headers)
    text = (await sqlite_client.http.get("/metrics")).text
    assert 'firstparty_events_total{outcome="stored",source="crm"}' in text
    assert 'firstparty_events_total{outcome="rejected_422",source="crm"}' in text
    assert "firstparty_group_commit_seconds_bucket" in text
