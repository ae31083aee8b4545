"""A forged Host header is never reflected: not into pages, redirects or cacheable JSON."""

from __future__ import annotations

import httpx
import pytest

from firstparty.settings import Settings
from tests.conftest import BROWSER_KEY, SERVER_KEY, AppClient, running_app, settings_for
from tests.web.test_admin_ui import signed_in_page

EVIL = "evil.example"
PATHS = [
    "/admin",
    "/admin/",
    "/admin/login",
    "/admin/deliveries",
    "/admin/deliveries?status=nope",
    "/admin/failures",
    "/admin/reports",
    "/admin/live",
    "/admin/sources",
    "/admin/destinations",
    "/admin/events/nope",
    "/admin/?cursor=%00",
    "/demo",
    "/demo/",
    "/demo/?key=wk_given_key_123",
    "/demo/events.json",
    "/fp.js",
    "/fp.js/",
    "/v1/events/",
    "/v1/events",
    "/v1/admin/events",
    "/v1/admin/nope",
    "/openapi.json",
    "/healthz",
    "/healthz/",
    "/readyz",
    "/metrics",
    "/nowhere",
    f"/segment/v1/projects/{BROWSER_KEY}/settings",
]


def _reflects(response: httpx.Response) -> bool:
    headers = " ".join(f"{k}: {v}" for k, v in response.headers.items())
    return EVIL in response.text or EVIL in headers


async def _sweep(app: AppClient) -> dict[str, httpx.Response]:
    await signed_in_page(app.http)
    forged = {"Host": EVIL, "X-Forwarded-Host": EVIL}
    answers = {path: await app.http.get(path, headers=forged) for path in PATHS}
    answers["POST /v1/events"] = await app.http.post(
        "/v1/events", json={"type": "page"}, headers={**forged, "X-Write-Key": SERVER_KEY}
    )
    return answers


def _settings(sqlite_url: str, **overrides: object) -> Settings:
    return settings_for(sqlite_url, demo=True, **overrides)


async def test_no_answer_carries_a_forged_host_with_a_public_url(sqlite_url: str) -> None:
    async with running_app(_settings(sqlite_url, public_url="https://t.example.test")) as app:
        answers = await _sweep(app)
    assert not [path for path, r in answers.items() if _reflects(r)]
    assert answers["/admin/reports"].status_code == 200, "the sweep saw the signed-in pages"
    assert answers["/demo/"].status_code == 200
    assert answers["/admin"].headers["location"] == "/admin/"
    assert answers["/demo"].headers["location"] == "/demo/"
    assert answers["/v1/events/"].status_code == 404, "no absolute slash redirect"
    segment = answers[f"/segment/v1/projects/{BROWSER_KEY}/settings"]
    io = segment.json()["integrations"]["Segment.io"]
    assert io["apiHost"] == "t.example.test/segment/v1" and io["protocol"] == "https"
    assert segment.headers["cache-control"] == "public, max-age=300"


@pytest.mark.parametrize("engine_kind", ["sqlite"], indirect=True)
async def test_without_a_public_url_only_an_uncacheable_answer_names_the_host(
    database_url: str,
) -> None:
    """The Segment settings need an absolute host: without `public_url` it is the caller's own
    Host, in an answer no shared cache keeps; nothing else reflects it."""
    async with running_app(_settings(database_url)) as app:
        answers = await _sweep(app)
    segment_path = f"/segment/v1/projects/{BROWSER_KEY}/settings"
    assert [path for path, r in answers.items() if _reflects(r)] == [segment_path]
    assert answers[segment_path].headers["cache-control"] == "no-store"
