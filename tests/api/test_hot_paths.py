"""`POST /v1/events` and `/v1/batch` skip Starlette's middleware and router (app._Server): every
answer must be the one the routed app gives, body limits, CORS, cookies and errors included."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.types import Receive, Scope, Send

from tests.conftest import BROWSER_KEY, BROWSER_UA, SERVER_KEY, AppClient

SITE = "https://www.example.test"
BROWSER = {"X-Write-Key": BROWSER_KEY, "Origin": SITE, "Content-Type": "application/json"}
EVENT = b'{"type":"track","name":"Lead","url":"https://www.example.test/?gclid=abc"}'
IDS = {"id", "event_id", "visitor_id", "error_id"}

CASES: list[tuple[str, dict[str, str], bytes]] = [
    ("/v1/events", BROWSER, EVENT),
    ("/v1/events", {**BROWSER, "Cookie": "fp_id=forged.sig"}, EVENT),
    ("/v1/events", {"X-Write-Key": SERVER_KEY}, b'{"type":"page","visitor_id":"v1"}'),
    ("/v1/events", {"Origin": SITE}, EVENT),
    ("/v1/events", {**BROWSER, "X-Write-Key": "wk_nope"}, EVENT),
    ("/v1/events", {**BROWSER, "Origin": "https://evil.test"}, EVENT),
    ("/v1/events", BROWSER, b'{"type":"track"}'),
    ("/v1/events", BROWSER, b'{"type":'),
    ("/v1/events", BROWSER, b'{"type":"page","title":"' + b"x" * 70_000 + b'"}'),
    ("/v1/events?key=" + BROWSER_KEY, {"Origin": SITE}, EVENT),
    ("/v1/batch", BROWSER, b'{"events":[' + EVENT + b',{"type":"nope"}]}'),
    ("/v1/batch", BROWSER, b'{"events":5}'),
]


@pytest.fixture
async def routed(sqlite_client: AppClient) -> AsyncIterator[httpx.AsyncClient]:
    """The same app reached through Starlette's own middleware and router only."""
    app = sqlite_client.app

    async def through_starlette(scope: Scope, receive: Receive, send: Send) -> None:
        await Starlette.__call__(app, scope, receive, send)

    transport = httpx.ASGITransport(app=through_starlette, client=("198.51.100.7", 50000))
    async with httpx.AsyncClient(
        transport=transport, base_url="https://t.example.test", headers={"User-Agent": BROWSER_UA}
    ) as client:
        yield client


def _shape(response: httpx.Response) -> dict[str, Any]:
    """What must match: status, headers (cookie values by name), the body without fresh ids."""
    headers = sorted(
        (name, value.split("=", 1)[0] if name == "set-cookie" else value)
        for name, value in response.headers.multi_items()
        if name not in ("date", "server", "content-length")
    )
    body = response.json()
    return {"status": response.status_code, "headers": headers, "body": _masked(body)}


def _masked(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "…" if k in IDS else _masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value


@pytest.mark.parametrize(("path", "headers", "body"), CASES)
async def test_the_hot_path_answers_as_the_routed_app(
    sqlite_client: AppClient,
    routed: httpx.AsyncClient,
    path: str,
    headers: dict[str, str],
    body: bytes,
) -> None:
    hot = await sqlite_client.http.post(path, content=body, headers=headers)
    slow = await routed.post(path, content=body, headers=headers)
    assert _shape(hot) == _shape(slow)


async def test_both_hot_paths_are_taken_before_the_router(sqlite_client: AppClient) -> None:
    assert set(sqlite_client.app.hot) == {"/v1/events", "/v1/batch"}


async def test_other_methods_and_paths_still_go_through_the_router(
    sqlite_client: AppClient,
) -> None:
    r = await sqlite_client.http.get("/v1/events")
    assert r.status_code == 405
    r = await sqlite_client.http.options("/v1/events", headers={"Origin": SITE})
    assert r.status_code == 204 and r.headers["access-control-allow-origin"] == SITE
