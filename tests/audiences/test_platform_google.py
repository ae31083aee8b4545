"""The Google Customer Match adapter (Data Manager): exact bodies, consent, batching, answers,
request status, export; and the OAuth flow and requests against the strict fake."""

from __future__ import annotations

import json
from typing import Any

import pytest

from firstparty.audiences.base import Change, Member
from firstparty.audiences.platforms import google
from firstparty.destinations.base import Delivered, Rejected, Response, Retry
from firstparty.identity import pii
from tests.audiences.platform_members import many, member
from tests.fakes import google_audience
from tests.fakes.google import exhausted, invalid_argument, unauthenticated
from tests.fakes.server import send

OAUTH = google.GoogleCustomerMatch.example_settings["oauth"]


def adapter(**overrides: Any) -> google.GoogleCustomerMatch:
    raw = {**google.GoogleCustomerMatch.example_settings, **overrides}
    return google.GoogleCustomerMatch(google.GoogleCustomerMatchSettings.model_validate(raw))


DESTINATION = {
    "operatingAccount": {"accountType": "GOOGLE_ADS", "accountId": "1234567890"},
    "productDestinationId": "9876543210",
}
GRANTED = {"adUserData": "CONSENT_GRANTED", "adPersonalization": "CONSENT_GRANTED"}


def test_ingest_carries_gmail_email_e164_phone_consent_and_terms() -> None:
    gmail = Member(
        "u:1",
        pii.hash_user({"email": "Ada.Lovelace@gmail.com", "phone": "+16505550001"}),
        ad_user_data=True,
        ad_personalization=False,
    )
    (request,) = adapter().build(Change.ADD, [gmail], token="ya29.t")
    assert request.method == "POST"
    assert request.url == "https://datamanager.googleapis.com/v1/audienceMembers:ingest"
    assert request.headers["Authorization"] == "Bearer ya29.t"
    assert request.secrets == ("ya29.t",)
    assert request.json == {
        "destinations": [DESTINATION],
        "audienceMembers": [
            {
                "userData": {
                    "userIdentifiers": [
                        {"emailAddress": pii.sha256("adalovelace@gmail.com")},
                        {"phoneNumber": pii.sha256("+16505550001")},
                    ]
                },
                "consent": {"adUserData": "CONSENT_GRANTED", "adPersonalization": "CONSENT_DENIED"},
            }
        ],
        "encoding": "HEX",
        "termsOfService": {"customerMatchTermsOfServiceStatus": "ACCEPTED"},
        "validateOnly": False,
    }


def test_remove_has_no_consent_nor_terms() -> None:
    (request,) = adapter(login_customer_id="111-222-3333").build(
        Change.REMOVE, [member(1)], token="t"
    )
    assert request.url.endswith("/audienceMembers:remove")
    assert set(request.json) == {"destinations", "audienceMembers", "encoding", "validateOnly"}
    assert request.json["audienceMembers"][0].keys() == {"userData"}
    login = {"accountType": "GOOGLE_ADS", "accountId": "1112223333"}
    assert request.json["destinations"] == [{**DESTINATION, "loginAccount": login}]


def test_email_falls_back_to_em_and_a_complete_address_is_added() -> None:
    ids = pii.hash_user(
        {"email": "a@example.com", "first_name": "Ada", "last_name": "Lovelace", "zip": "94045"}
    )
    ids |= {"country_code": "US"}
    (request,) = adapter().build(Change.ADD, [Member("u:1", ids, True, True)], token="t")
    assert request.json["audienceMembers"][0]["userData"]["userIdentifiers"] == [
        {"emailAddress": pii.sha256("a@example.com")},
        {
            "address": {
                "givenName": pii.sha256("ada"),
                "familyName": pii.sha256("lovelace"),
                "regionCode": "US",
                "postalCode": "94045",
            }
        },
    ]


def test_members_without_email_or_e164_phone_are_not_sent() -> None:
    meta_phone_only = Member("v:1", {"ph": pii.sha256("16505550001")})
    assert adapter().build(Change.ADD, [meta_phone_only], token="t") == []
    (request,) = adapter().build(Change.ADD, [meta_phone_only, member(2)], token="t")
    assert request.event_pks == ("u:2",)


@pytest.mark.parametrize(("count", "sizes"), [(10_000, [10_000]), (10_001, [10_000, 1])])
def test_batches_of_at_most_ten_thousand_members(count: int, sizes: list[int]) -> None:
    requests = adapter().build(Change.ADD, many(count), token="t")
    assert [len(r.json["audienceMembers"]) for r in requests] == sizes
    assert all(
        len(m["userData"]["userIdentifiers"]) <= 10 for m in requests[0].json["audienceMembers"]
    )


def rpc(reply: Any) -> Response:
    body, headers = reply.encoded()
    return Response(reply.status, headers, body)


@pytest.mark.parametrize(
    ("response", "kinds", "words"),
    [
        (Response(200, {}, b'{"requestId": "r-1"}'), [Delivered, Delivered], "requestId r-1"),
        (rpc(exhausted(30)), [Retry, Retry], "RESOURCE_EXHAUSTED"),
        (rpc(unauthenticated()), [Retry, Retry], "UNAUTHENTICATED"),
        (Response(503, {}, b""), [Retry, Retry], "HTTP 503"),
        (
            rpc(invalid_argument([("audience_members[1].user_data", "bad", "INVALID_FORMAT")])),
            [Retry, Rejected],
            "INVALID_ARGUMENT",
        ),
        (
            rpc(invalid_argument([("destinations[0]", "no", "INVALID_DESTINATION")])),
            [Rejected, Rejected],
            "INVALID_DESTINATION",
        ),
    ],
)
def test_answers(response: Response, kinds: list[type], words: str) -> None:
    a = adapter()
    (request,) = a.build(Change.ADD, [member(1), member(2)], token="t")
    outcomes = a.interpret(request, response)
    assert [type(outcomes[k]) for k in ("u:1", "u:2")] == kinds
    for outcome in outcomes.values():
        assert words in (outcome.detail if isinstance(outcome, Delivered) else outcome.reason)


def test_accepted_answer_asks_for_a_follow_up_and_reads_the_status() -> None:
    a = adapter()
    (request,) = a.build(Change.ADD, [member(1)], token="t")
    accepted = a.interpret(request, Response(200, {}, b'{"requestId": "r-9"}'))["u:1"]
    assert isinstance(accepted, Delivered) and accepted.follow_up == "r-9"
    ask = a.follow_up("r-9", ["u:1"], "t")
    assert ask.method == "GET" and ask.url.endswith("/requestStatus:retrieve?requestId=r-9")
    done = {
        "requestStatusPerDestination": [
            {
                "destination": DESTINATION,
                "requestStatus": "SUCCESS",
                "audienceMembersIngestionStatus": {
                    "userDataIngestionStatus": {
                        "recordCount": "1",
                        "uploadMatchRateRange": "MATCH_RATE_RANGE_41_TO_50",
                    }
                },
            }
        ]
    }
    outcome = a.interpret_follow_up(ask, Response(200, {}, json.dumps(done).encode()))["u:1"]
    assert isinstance(outcome, Delivered) and "41_TO_50" in outcome.detail
    pending = {
        "requestStatusPerDestination": [{"destination": DESTINATION, "requestStatus": "PROCESSING"}]
    }
    later = a.interpret_follow_up(ask, Response(200, {}, json.dumps(pending).encode()))["u:1"]
    assert isinstance(later, Retry)


def test_validate_only_is_a_test_delivery() -> None:
    a = adapter(validate_only=True)
    (request,) = a.build(Change.ADD, [member(1)], token="t")
    assert request.json["validateOnly"] is True
    outcome = a.interpret(request, Response(200, {}, b"{}"))["u:1"]
    assert isinstance(outcome, Delivered) and outcome.test


def test_export_is_the_customer_match_file() -> None:
    ids = pii.hash_user({"email": "a.b@gmail.com", "phone": "+16505550001", "first_name": "Ada"})
    header, rows = adapter().export([Member("u:1", ids), Member("v:0", {"ph": "x" * 64})])
    assert header == ["Email", "Phone", "First Name", "Last Name", "Country", "Zip"]
    assert rows == [
        [pii.sha256("ab@gmail.com"), pii.sha256("+16505550001"), pii.sha256("ada"), "", "", ""]
    ]


def test_through_the_fake_with_a_real_token_the_list_holds_the_members() -> None:
    with google_audience.FakeGoogleAudience() as fake:
        oauth = fake.add_refresh_token("cid", "secret", "1//refresh")
        a = adapter(api_base=fake.url + "/v1", token_url=fake.url + "/token", oauth=oauth)
        token, lifetime = a.read_token(send(a.token_request()))
        assert lifetime > 0
        people = [member(n) for n in range(4)]
        for change, group in ((Change.ADD, people), (Change.REMOVE, people[:1])):
            for request in a.build(change, group, token=token):
                outcomes = a.interpret(request, send(request))
                assert all(isinstance(o, Delivered) and o.follow_up for o in outcomes.values())
        assert fake.emails() == {p.identifiers["em"] for p in people[1:]}


def test_the_fake_refuses_uploads_without_the_terms_accepted() -> None:
    with google_audience.FakeGoogleAudience() as fake:
        token = fake.issue_token(google_audience.DATAMANAGER)
        a = adapter(api_base=fake.url + "/v1", accept_customer_match_terms=False)
        (request,) = a.build(Change.ADD, [member(1)], token=token)
        outcome = a.interpret(request, send(request))["u:1"]
        assert isinstance(outcome, Rejected)
        assert "TERMS_AND_CONDITIONS_NOT_SIGNED" in outcome.reason
        assert fake.size() == 0


def test_request_status_through_the_fake_processing_then_success_with_match_rate() -> None:
    with google_audience.FakeGoogleAudience() as fake:
        fake.match_rate = "MATCH_RATE_RANGE_51_TO_60"
        token = fake.issue_token(google_audience.DATAMANAGER)
        a = adapter(api_base=fake.url + "/v1")
        (request,) = a.build(Change.ADD, [member(1), member(2)], token=token)
        accepted = a.interpret(request, send(request))["u:1"]
        assert isinstance(accepted, Delivered) and accepted.follow_up
        request_id = accepted.follow_up
        ask = a.follow_up(request_id, request.event_pks, token)
        first = a.interpret_follow_up(ask, send(ask))
        assert all(isinstance(o, Retry) and "PROCESSING" in o.reason for o in first.values())
        done = a.interpret_follow_up(ask, send(ask))
        assert all(isinstance(o, Delivered) and "51_TO_60" in o.detail for o in done.values())
        unknown = a.follow_up("no-such-request", ["u:1"], token)
        assert isinstance(a.interpret_follow_up(unknown, send(unknown))["u:1"], Rejected)
