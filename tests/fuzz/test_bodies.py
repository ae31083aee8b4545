"""A Hypothesis body fuzzer for every endpoint that reads a body: JSON shaped like each one's
input with hostile values (NaN, Infinity, 1e999, integers past 64 bits, NUL, times in year 1
and 9999, deep nesting, NaN-ish field names), and raw bytes cut or spoiled (invalid UTF-8).
Sent to `firstparty serve` with a write key and the admin token: no answer may be a 5xx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.conftest import HEADERS, Server, count

EXAMPLES = 50  # per endpoint (9 of them): 450 requests

FIELDS = {
    "/v1/events": ["type", "name", "event_id", "timestamp", "url", "properties", "user",
                   "user_id", "visitor_id", "consent", "context"],
    "/segment/v1/track": ["type", "event", "userId", "anonymousId", "messageId", "timestamp",
                          "sentAt", "properties", "traits", "context", "integrations"],
    "/segment/v1/identify": ["userId", "anonymousId", "traits", "timestamp", "context"],
    "/v1/otp/start": ["phone"],
    "/v1/otp/verify": ["phone", "code"],
    "/v1/admin/replay": ["destination", "since", "until", "event", "dry_run"],
    "/v1/admin/privacy/erase": ["user_id", "visitor_id", "phone", "email"],
}  # fmt: skip
BATCHES = {
    "/v1/batch": ("events", "/v1/events"),
    "/segment/v1/batch": ("batch", "/segment/v1/track"),
}

NON_FINITE = "\ue000"  # a marker replaced by a number JSON cannot carry, once encoded
times = st.sampled_from(
    ["0001-01-01", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "10000-01-01", "1970-01-01",
     "2026-13-45T99:99:99Z", "-1", "NaN", ""]
)  # fmt: skip
texts = st.text(max_size=40) | st.sampled_from(["\x00", "a\x00b", "\ud7ff", "+12025550100"])
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.just(NON_FINITE)
    | texts
    | times
)
names = st.text(max_size=12) | st.sampled_from(["NaN", "Infinity", "\x00", "__proto__", ""])
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(names, inner, max_size=4),
    max_leaves=12,
)
deep = st.integers(min_value=30, max_value=80).map(lambda n: "[" * n + "1" + "]" * n)


def shaped(fields: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """An object with some of the endpoint's own fields (and maybe others), hostile values."""
    return st.dictionaries(st.sampled_from(fields) | names, values | times, max_size=6)


def encode(body: Any) -> bytes:
    text = json.dumps(body, allow_nan=True)  # NaN and Infinity as JavaScript writes them
    return text.replace(json.dumps(NON_FINITE), "1e999").encode("utf-8", "surrogatepass")


@st.composite
def bodies(draw: st.DrawFn, path: str) -> bytes:
    if path in BATCHES:
        key, single = BATCHES[path]
        body: Any = {key: draw(st.lists(shaped(FIELDS[single]) | values, max_size=4))}
    else:
        body = draw(shaped(FIELDS[path]) | values)
    raw = encode(body)
    spoil = draw(st.sampled_from(["none", "none", "cut", "bytes", "deep"]))
    if spoil == "cut" and raw:
        raw = raw[: draw(st.integers(0, len(raw) - 1))]
    elif spoil == "bytes":
        at = draw(st.integers(0, len(raw)))
        spoiled = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00"]))
        raw = raw[:at] + spoiled + raw[at:]
    elif spoil == "deep" and raw.startswith(b"{") and len(raw) > 2:
        raw = b'{"d":' + draw(deep).encode() + b"," + raw[1:]
    return raw


@pytest.fixture(scope="module")
def client(fuzz_server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fuzz_server.url, headers=HEADERS, timeout=30) as http:
        yield http


@pytest.mark.parametrize("path", [*FIELDS, *BATCHES])
def test_no_body_gets_a_5xx(client: httpx.Client, fuzz_server: Server, path: str) -> None:
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,  # each run explores afresh; a failure prints its body
    )
    @given(raw=bodies(path))
    def send(raw: bytes) -> None:
        headers = {"content-type": "application/json"}
        r = client.post(path, content=raw, headers=headers)
        count("hypothesis bodies", r.status_code)
        assert r.status_code < 500, f"{path} {raw[:300]!r}: {r.status_code} {r.text[:300]}"
        assert r.headers["content-type"].startswith("application/json"), r.headers
        r.json()

    send()
