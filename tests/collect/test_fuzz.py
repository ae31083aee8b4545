"""Any body at all gets a clear 4xx or a 2xx from the collection endpoints: never a 500."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import BROWSER_KEY, SERVER_KEY, AppClient

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
values = st.recursive(scalars, lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner))
FIELDS = ["type", "name", "event_id", "timestamp", "url", "referrer", "title", "properties",
          "user", "user_id", "visitor_id", "consent", "context"]  # fmt: skip
event_like = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["page", "track", "identify", "other"]) | scalars,
        **{f: values for f in FIELDS[1:]},
        "user": st.dictionaries(st.sampled_from(["email", "phone", "zip", "gender"]), values),
        "timestamp": st.integers() | st.floats(allow_nan=False) | st.text(),
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=event_like | values, as_batch=st.booleans(), server=st.booleans())
def test_no_input_gives_a_500(
    sqlite_client: AppClient, body: Any, as_batch: bool, server: bool
) -> None:
    path = "/v1/batch" if as_batch else "/v1/events"
    payload = {"events": [body]} if as_batch else body
    headers = {"X-Write-Key": SERVER_KEY if server else BROWSER_KEY}

    async def send() -> Any:
        return await sqlite_client.http.post(path, content=json.dumps(payload), headers=headers)

    response = asyncio.get_event_loop().run_until_complete(send())
    assert response.status_code < 500, response.text
    assert "error" in response.json() or "results" in response.json() or response.json()["ok"]
