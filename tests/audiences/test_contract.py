"""The contract every registered audience adapter keeps (as tests/destinations/test_contract.py
for the conversion adapters): its example settings validate; `build` carries only usable
members, each once, at most `max_members` a request, with its secrets listed for masking;
`interpret` gives an outcome for every member of a request, whatever the answer; `export` rows
are as wide as the header; the type is documented."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from firstparty.audiences import registry
from firstparty.audiences.base import AudienceAdapter, Change, Member
from firstparty.destinations.base import Delivered, Rejected, Response, Retry, Skipped
from tests.audiences.platform_members import many

DOCS = Path(__file__).parents[2] / "docs" / "audiences.md"
KINDS = sorted(registry.ADAPTERS)
ANSWERS = [
    Response(200, {}, b"{}"),
    Response(200, {}, b'{"code": 0, "requestId": "r", "num_received": 1}'),
    Response(400, {}, b'{"error": {"code": 100, "message": "bad"}}'),
    Response(401, {}, b""),
    Response(429, {"Retry-After": "3"}, b""),
    Response(500, {}, b"<html>oops</html>"),
    Response(200, {}, b"not json"),
]


def adapter(kind: str) -> AudienceAdapter:
    cls = registry.ADAPTERS[kind]
    example: dict[str, Any] = dict(getattr(cls, "example_settings", {}))
    raw = {k: ("secret-token-0001" if str(v).startswith("env:") else v) for k, v in example.items()}
    return cls(cls.settings_model.model_validate(raw))


def test_the_three_platforms_are_registered() -> None:
    assert KINDS == ["google_customer_match", "meta_custom_audience", "tiktok_audience"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("change", list(Change))
def test_build_carries_each_usable_member_once_within_the_limit(kind: str, change: Change) -> None:
    a = adapter(kind)
    members = [*many(a.max_members + 3), Member("v:nothing", {}), Member("v:other", {"zz": "1"})]
    requests = a.build(change, members, token="access-token-0001")
    keys = [k for r in requests for k in r.event_pks]
    assert sorted(keys) == sorted(m.key for m in members if a.usable(m))
    assert all(1 <= len(r.event_pks) <= a.max_members for r in requests)
    for request in requests:
        encoded = json.dumps(request.json) + request.url + json.dumps(dict(request.headers))
        secrets = [s for s in ("secret-token-0001", "access-token-0001") if s in encoded]
        assert set(secrets) <= set(request.secrets)  # anything secret sent is masked when logged
        assert request.method in ("POST", "DELETE")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("answer", ANSWERS, ids=lambda r: f"{r.status}-{r.body[:12]!r}")
def test_interpret_answers_for_every_member(kind: str, answer: Response) -> None:
    a = adapter(kind)
    (request,) = a.build(Change.ADD, many(3), token="access-token-0001")
    outcomes = a.interpret(request, answer)
    assert set(outcomes) == set(request.event_pks)
    assert all(isinstance(o, Delivered | Retry | Rejected | Skipped) for o in outcomes.values())
    if answer.status in (429, 500):
        assert all(isinstance(o, Retry) for o in outcomes.values())


@pytest.mark.parametrize("kind", KINDS)
def test_export_rows_are_as_wide_as_the_header(kind: str) -> None:
    header, rows = adapter(kind).export([*many(5), Member("v:nothing", {})])
    assert header and len(rows) == 5
    assert all(len(row) == len(header) for row in rows)


@pytest.mark.parametrize("kind", KINDS)
def test_every_type_is_documented(kind: str) -> None:
    assert f"`{kind}`" in DOCS.read_text()
    assert registry.ADAPTERS[kind].min_members >= 100
