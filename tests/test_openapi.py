"""The public surface is pinned: every mounted route is in /openapi.json."""

from __future__ import annotations

import re

from starlette.routing import Route

from firstparty.app import route_modules
from tests.conftest import AppClient


async def test_every_route_is_documented(sqlite_client: AppClient) -> None:
    doc = (await sqlite_client.http.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    mounted = {
        (r.path, method.lower())
        for module in route_modules()
        for r in module
        if isinstance(r, Route)
        for method in r.methods or ()
        if method != "HEAD"  # Starlette's own beside every GET
    }
    documented = {(path, method) for path, item in doc["paths"].items() for method in item}
    missing = mounted - documented
    assert not missing, f"document these in firstparty/api/openapi.py: {sorted(missing)}"
    assert "EventIn" in doc["components"]["schemas"]
    for path in ("/v1/events", "/v1/batch"):
        codes = set(doc["paths"][path]["post"]["responses"])
        assert {"400", "401", "403", "413", "422", "429", "500", "503"} <= codes


async def test_every_path_parameter_and_answer_is_declared(sqlite_client: AppClient) -> None:
    """Each `{name}` is a declared path parameter; each operation names its success, the 500 of
    a crash, and (reading a body) its refusal of a body too large."""
    doc = (await sqlite_client.http.get("/openapi.json")).json()
    for path, item in doc["paths"].items():
        for method, op in item.items():
            where = f"{method.upper()} {path}"
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == set(re.findall(r"{(\w+)}", path)), where
            codes = set(op["responses"])
            assert any(c[0] in "23" for c in codes), f"{where}: no success answer"
            assert "500" in codes, f"{where}: the 500 of a crash"
            if method == "post":
                too_large = "400" if path.startswith("/segment/") else "413"
                assert too_large in codes, f"{where}: a body too large"
            for code in codes:
                assert op["responses"][code]["description"], f"{where} {code}"


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
