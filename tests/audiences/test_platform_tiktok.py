"""The TikTok audience adapter: exact bodies, batching, skipping, TikTok's code envelope, export;
and requests against the strict fake, which ends up holding exactly the members."""

from __future__ import annotations

import json
from typing import Any

import pytest

from firstparty.audiences.base import Change, Member
from firstparty.audiences.platforms import tiktok
from firstparty.destinations.base import Delivered, Rejected, Response, Retry
from firstparty.identity import pii
from tests.audiences.platform_members import many, member
from tests.fakes import tiktok_audience
from tests.fakes.server import send

TOKEN = tiktok_audience.ACCESS_TOKEN


def adapter(**overrides: Any) -> tiktok.TikTokAudience:
    raw = {**tiktok.TikTokAudience.example_settings, "access_token": TOKEN, **overrides}
    return tiktok.TikTokAudience(tiktok.TikTokAudienceSettings.model_validate(raw))


def test_add_maps_each_person_to_one_inner_list_in_schema_order() -> None:
    a, b = member(1), member(2, phone=False)
    (request,) = adapter().build(Change.ADD, [a, b])
    assert request.method == "POST"
    assert request.url == "https://business-api.tiktok.com/open_api/v1.3/segment/mapping/"
    assert request.headers["Access-Token"] == TOKEN and request.secrets == (TOKEN,)
    ids = ["123456789"]
    assert request.json == {
        "advertiser_ids": ["7000000000000000001"],
        "action": "add",
        "id_schema": ["EMAIL_SHA256", "PHONE_SHA256"],
        "batch_data": [
            [
                {"id": a.identifiers["em"], "audience_ids": ids},
                {"id": a.identifiers["ph_e164"], "audience_ids": ids},
            ],
            [{"id": b.identifiers["em"], "audience_ids": ids}, {}],
        ],
    }
    assert a.identifiers["ph_e164"] == pii.sha256("+16505550001")  # E.164 with "+"


def test_remove_is_the_delete_action() -> None:
    (request,) = adapter().build(Change.REMOVE, [member(1)])
    assert request.json["action"] == "delete"


def test_members_without_email_or_e164_phone_are_not_sent() -> None:
    only_meta_phone = Member("v:1", {"ph": pii.sha256("16505550001")})
    assert adapter().build(Change.ADD, [only_meta_phone]) == []


@pytest.mark.parametrize(("count", "sizes"), [(10_000, [10_000]), (10_001, [10_000, 1])])
def test_batches(count: int, sizes: list[int]) -> None:
    requests = adapter().build(Change.ADD, many(count))
    assert [len(r.json["batch_data"]) for r in requests] == sizes


def envelope(code: int, message: str = "m") -> Response:
    return Response(
        200, {}, json.dumps({"code": code, "message": message, "request_id": "r"}).encode()
    )


@pytest.mark.parametrize(
    ("response", "kind", "words"),
    [
        (envelope(0, "OK"), Delivered, "request_id=r"),
        (envelope(40100, "Too many requests."), Retry, "rate limit"),
        (envelope(40001, "No permission"), Rejected, "token or its permissions"),
        (envelope(40105, "Access token is incorrect"), Rejected, "code 40105"),
        (envelope(40002, "id_schema: bad"), Rejected, "id_schema"),
        (envelope(51000, "internal"), Retry, "code 51000"),
        (Response(401, {}, b""), Rejected, "HTTP 401"),
        (Response(503, {"Retry-After": "7"}, b""), Retry, "HTTP 503"),
        (Response(200, {}, b"<html>"), Retry, "without a code"),
    ],
)
def test_answers(response: Response, kind: type, words: str) -> None:
    (request,) = adapter().build(Change.ADD, [member(1)])
    outcome = adapter().interpret(request, response)["u:1"]
    assert isinstance(outcome, kind)
    assert words in (outcome.detail if isinstance(outcome, Delivered) else outcome.reason)


def test_export_is_the_hashed_customer_file_with_its_phone_rule() -> None:
    a = member(1)
    header, rows = adapter().export([a, Member("v:0", {})])
    assert header == ["Email_SHA256", "Phone_SHA256"]
    # the file's phone is digits without "+" (TikTok's customer-file rule): the stored `ph`
    assert rows == [[a.identifiers["em"], pii.sha256("16505550001")]]


def test_the_fake_holds_what_was_added_then_deleted_and_retries_change_nothing() -> None:
    people = [member(n) for n in range(3)]
    with tiktok_audience.FakeTikTokAudience() as fake:
        a = adapter(api_base=fake.api_base)
        fake.fail_next(1)
        (request,) = a.build(Change.ADD, people)
        assert all(isinstance(o, Retry) for o in a.interpret(request, send(request)).values())
        assert fake.size() == 0
        assert all(isinstance(o, Delivered) for o in a.interpret(request, send(request)).values())
        (remove,) = a.build(Change.REMOVE, people[:1])
        assert isinstance(a.interpret(remove, send(remove))["u:0"], Delivered)
        assert fake.emails() == {p.identifiers["em"] for p in people[1:]}
