"""The Meta Custom Audience adapter: exact bodies, batching, skipping, answers, export; and
requests sent over HTTP to the strict fake, which ends up holding exactly the members."""

from __future__ import annotations

import json
from typing import Any

import pytest

from firstparty.audiences.base import Change, Member
from firstparty.audiences.platforms import meta
from firstparty.destinations.base import Delivered, Rejected, Response, Retry
from firstparty.identity import pii
from tests.audiences.platform_members import many, member
from tests.fakes import meta_audience
from tests.fakes.server import send

TOKEN = meta_audience.ACCESS_TOKEN


def adapter(**overrides: Any) -> meta.MetaCustomAudience:
    raw = {**meta.MetaCustomAudience.example_settings, "access_token": TOKEN, **overrides}
    return meta.MetaCustomAudience(meta.MetaCustomAudienceSettings.model_validate(raw))


def test_add_is_a_post_of_the_stored_hashes_in_meta_schema_order() -> None:
    a = member(1, external_id=pii.sha256("crm-1"))
    b = member(2, phone=False)
    (request,) = adapter().build(Change.ADD, [a, b])
    assert request.method == "POST"
    assert request.url == "https://graph.facebook.com/v25.0/23850000000000001/users"
    assert request.event_pks == ("u:1", "u:2")
    assert request.json == {
        "payload": {
            "schema": ["EMAIL", "PHONE", "EXTERN_ID"],
            "data": [
                [a.identifiers["em"], a.identifiers["ph"], pii.sha256("crm-1")],
                [b.identifiers["em"], "", ""],
            ],
        },
        "access_token": TOKEN,
    }
    assert request.secrets == (TOKEN,)
    # PHONE is Meta's digits-without-"+" hash, never re-hashed
    assert a.identifiers["ph"] == pii.sha256("16505550001")


def test_remove_is_a_delete_with_the_same_body() -> None:
    a = member(1)
    (add,) = adapter().build(Change.ADD, [a])
    (remove,) = adapter().build(Change.REMOVE, [a])
    assert (remove.method, remove.url, remove.json) == ("DELETE", add.url, add.json)


def test_extra_keys_and_a_narrower_schema_setting() -> None:
    a = member(1, fn=pii.sha256("ada"), ln=pii.sha256("lovelace"), ge=pii.sha256("f"))
    (request,) = adapter().build(Change.ADD, [a])
    assert request.json["payload"]["schema"] == ["EMAIL", "PHONE", "FN", "LN", "GEN"]
    (narrow,) = adapter(schema_keys=["EMAIL"]).build(Change.ADD, [a])
    assert narrow.json["payload"] == {"schema": ["EMAIL"], "data": [[a.identifiers["em"]]]}


def test_members_without_an_email_phone_or_extern_id_are_not_sent() -> None:
    names_only = Member("v:9", {"fn": pii.sha256("ada"), "ln": pii.sha256("lovelace")})
    assert not adapter().usable(names_only)
    assert adapter().build(Change.ADD, [names_only]) == []
    (request,) = adapter().build(Change.ADD, [names_only, member(1)])
    assert request.event_pks == ("u:1",)


@pytest.mark.parametrize(
    ("count", "sizes"),
    [(10_000, [10_000]), (10_001, [10_000, 1]), (25_000, [10_000] * 2 + [5_000])],
)
def test_batches_of_at_most_ten_thousand_rows(count: int, sizes: list[int]) -> None:
    requests = adapter().build(Change.ADD, many(count))
    assert [len(r.json["payload"]["data"]) for r in requests] == sizes
    assert [len(r.event_pks) for r in requests] == sizes
    assert all("session" not in r.json for r in requests)


def test_upload_session_numbers_the_calls_of_one_change() -> None:
    requests = adapter(upload_session=True, batch_size=2).build(Change.ADD, many(5))
    sessions = [r.json["session"] for r in requests]
    assert [s["batch_seq"] for s in sessions] == [1, 2, 3]
    assert [s["last_batch_flag"] for s in sessions] == [False, False, True]
    assert {s["session_id"] for s in sessions} == {sessions[0]["session_id"]}
    assert {s["estimated_num_total"] for s in sessions} == {5}


def test_appsecret_proof_is_added_and_masked() -> None:
    (request,) = adapter(app_secret="shh").build(Change.ADD, [member(1)])
    proof = request.json["appsecret_proof"]
    assert len(proof) == 64 and set(request.secrets) == {TOKEN, "shh", proof}


def graph(status: int, error: dict[str, Any], **headers: str) -> Response:
    return Response(status, headers, json.dumps({"error": error}).encode())


@pytest.mark.parametrize(
    ("response", "kind", "words"),
    [
        (
            Response(200, {}, b'{"audience_id":"1","num_received":2,"num_invalid_entries":0}'),
            Delivered,
            "num_received=2 num_invalid_entries=0",
        ),
        (graph(400, {"message": "Invalid OAuth access token", "code": 190}), Rejected, "token"),
        (graph(400, {"message": "(#80003) too many calls", "code": 80003}), Retry, "80003"),
        (graph(400, {"message": "(#4) limit", "code": 4, "is_transient": True}), Retry, "(#4)"),
        (graph(500, {"message": "unexpected", "code": 2, "is_transient": True}), Retry, "code 2"),
        (graph(400, {"message": "Invalid parameter", "code": 100}), Rejected, "code 100"),
        (
            graph(400, {"message": "Invalid parameter", "code": 100, "error_subcode": 1713230}),
            Rejected,
            "flagged",
        ),
        (Response(502, {}, b"<html>bad gateway</html>"), Retry, "HTTP 502"),
        (Response(403, {}, b""), Rejected, "HTTP 403"),
    ],
)
def test_answers(response: Response, kind: type, words: str) -> None:
    (request,) = adapter().build(Change.ADD, [member(1), member(2)])
    outcomes = adapter().interpret(request, response)
    assert set(outcomes) == {"u:1", "u:2"}
    for outcome in outcomes.values():
        assert isinstance(outcome, kind)
        assert words in (outcome.detail if isinstance(outcome, Delivered) else outcome.reason)


def test_export_is_the_customer_list_file_with_hashes() -> None:
    a, b = member(1, external_id=pii.sha256("crm-1")), member(2, phone=False)
    header, rows = adapter().export([a, b, Member("v:0", {})])
    assert header == ["email", "phone", "extern_id"]
    assert rows == [
        [a.identifiers["em"], a.identifiers["ph"], pii.sha256("crm-1")],
        [b.identifiers["em"], "", ""],
    ]


def test_the_fake_holds_what_the_adapter_added_then_removed() -> None:
    people = [member(n) for n in range(5)]
    with meta_audience.FakeMetaAudience() as fake:
        a = adapter(api_base=fake.api_base)
        for request in a.build(Change.ADD, people):
            outcomes = a.interpret(request, send(request))
            assert all(isinstance(o, Delivered) for o in outcomes.values())
        for request in a.build(Change.REMOVE, people[:2]):
            assert all(
                isinstance(o, Delivered) for o in a.interpret(request, send(request)).values()
            )
        assert fake.emails() == {p.identifiers["em"] for p in people[2:]}
        assert [r.method for r in fake.requests] == ["POST", "DELETE"]


def test_a_failed_call_is_retried_and_changes_nothing_at_meta() -> None:
    with meta_audience.FakeMetaAudience() as fake:
        a = adapter(api_base=fake.api_base)
        fake.fail_next(1)
        (request,) = a.build(Change.ADD, [member(1)])
        assert isinstance(a.interpret(request, send(request))["u:1"], Retry)
        assert fake.size() == 0
        assert isinstance(a.interpret(request, send(request))["u:1"], Delivered)
        assert fake.size() == 1


def test_a_wrong_token_at_the_fake_is_rejected_with_meta_words() -> None:
    with meta_audience.FakeMetaAudience() as fake:
        a = adapter(api_base=fake.api_base, access_token="wrong")
        (request,) = a.build(Change.ADD, [member(1)])
        outcome = a.interpret(request, send(request))["u:1"]
        assert isinstance(outcome, Rejected) and "code 190" in outcome.reason
