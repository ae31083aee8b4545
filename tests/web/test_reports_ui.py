"""The reports page through the real app: the shared filter (range, source, time zone) and the
400 page for a malformed query."""

from __future__ import annotations

import pytest

from tests.conftest import AppClient
from tests.web.test_admin_ui import sign_in, signed_in_page


async def test_a_picked_range_shows_in_the_filter(sqlite_client: AppClient) -> None:
    query = "/admin/reports?range=7d&tz=Europe/Paris&source=browser"
    page = await signed_in_page(sqlite_client.http, query)
    assert 'id="report-filters"' in page and 'method="get"' in page
    assert '<option value="7d" selected>Last 7 days</option>' in page
    assert 'value="Europe/Paris"' in page and "Europe/Paris)" in page
    assert '<option value="browser" selected>browser</option>' in page


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("range=fortnight", "range"),
        ("range=custom&from=2026-02-30&to=2026-03-01", "from"),
        ("tz=Not/AZone", "tz"),
        ("from=2026-03-02&to=2026-03-01", "to"),
    ],
)
async def test_a_bad_query_is_a_400_page(sqlite_client: AppClient, query: str, field: str) -> None:
    assert (await sign_in(sqlite_client.http)).status_code == 303
    answer = await sqlite_client.http.get(f"/admin/reports?{query}")
    assert answer.status_code == 400
    assert answer.headers["content-type"].startswith("text/html")
    assert f"{field}:" in answer.text
