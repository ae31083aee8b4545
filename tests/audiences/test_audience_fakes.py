"""The strict fakes of the three audience APIs refuse what the platforms refuse, in the
platforms' shapes, and change no membership when they do."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fakes import google_audience, meta_audience, tiktok_audience

H = "a" * 64  # a well-formed lower-case SHA-256 hex digest
H2 = "b" * 64


# ---------------------------------------------------------------- Meta


@pytest.fixture(scope="module")
def meta() -> Iterator[meta_audience.FakeMetaAudience]:
    with meta_audience.FakeMetaAudience(audience_ids=("1", "2")) as fake:
        fake.flagged.add("2")
        yield fake


def meta_body(**overrides: Any) -> dict[str, Any]:
    body = {
        "payload": {"schema": ["EMAIL", "PHONE", "EXTERN_ID"], "data": [[H, "", "crm-1"]]},
        "access_token": meta_audience.ACCESS_TOKEN,
    }
    return {**body, **overrides}


META_REFUSALS = [
    ("wrong token", "1", meta_body(access_token="x"), 190, None),
    ("unknown audience", "9", meta_body(), 100, 33),
    ("flagged audience", "2", meta_body(), 100, 1713230),
    ("unknown key", "1", meta_body(payload={"schema": ["EMAILS"], "data": [[H]]}), 100, None),
    (
        "repeated key",
        "1",
        meta_body(payload={"schema": ["EMAIL", "EMAIL"], "data": [[H, H]]}),
        100,
        None,
    ),
    ("empty schema", "1", meta_body(payload={"schema": [], "data": [[H]]}), 100, None),
    (
        "row too short",
        "1",
        meta_body(payload={"schema": ["EMAIL", "PHONE"], "data": [[H]]}),
        100,
        None,
    ),
    ("clear email", "1", meta_body(payload={"schema": ["EMAIL"], "data": [["a@b.c"]]}), 100, None),
    (
        "upper-case hash",
        "1",
        meta_body(payload={"schema": ["EMAIL"], "data": [[H.upper()]]}),
        100,
        None,
    ),
    ("number cell", "1", meta_body(payload={"schema": ["EXTERN_ID"], "data": [[42]]}), 100, None),
    ("no rows", "1", meta_body(payload={"schema": ["EMAIL"], "data": []}), 100, None),
    (
        "10,001 rows",
        "1",
        meta_body(payload={"schema": ["EMAIL"], "data": [[H]] * 10_001}),
        100,
        None,
    ),
    ("bad session", "1", meta_body(session={"session_id": "x", "batch_seq": 1}), 100, None),
    (
        "session not starting at 1",
        "1",
        meta_body(session={"session_id": 7, "batch_seq": 2, "last_batch_flag": True}),
        100,
        None,
    ),
]


@pytest.mark.parametrize(("case", "audience", "body", "code", "subcode"), META_REFUSALS)
def test_meta_refusals(
    meta: meta_audience.FakeMetaAudience,
    case: str,
    audience: str,
    body: dict[str, Any],
    code: int,
    subcode: int | None,
) -> None:
    answer = httpx.post(f"{meta.api_base}/{audience}/users", json=body)
    assert answer.status_code == 400, case
    error = answer.json()["error"]
    assert (error["code"], error.get("error_subcode")) == (code, subcode)
    assert error["type"] == "OAuthException" and error["fbtrace_id"]
    assert meta.held["1"] == []


def test_meta_adds_counts_invalid_rows_and_deletes_by_any_match_key(
    meta: meta_audience.FakeMetaAudience,
) -> None:
    rows = {"schema": ["EMAIL", "PHONE"], "data": [[H, ""], ["", H2], ["", ""]]}
    answer = httpx.post(f"{meta.api_base}/1/users", json=meta_body(payload=rows)).json()
    assert answer["num_received"] == 3 and answer["num_invalid_entries"] == 1
    assert meta.held["1"] == [{"EMAIL": H}, {"PHONE": H2}]
    body = json.dumps(meta_body(payload={"schema": ["PHONE"], "data": [[H2]]}))
    removed = httpx.request(
        "DELETE",
        f"{meta.api_base}/1/users",
        content=body,
        headers={"Content-Type": "application/json"},
    )
    assert removed.status_code == 200
    assert meta.held["1"] == [{"EMAIL": H}]
    meta.held["1"].clear()


def test_meta_sessions_run_in_order_and_close(meta: meta_audience.FakeMetaAudience) -> None:
    rows = {"schema": ["EMAIL"], "data": [[H]]}

    def call(seq: int, last: bool) -> int:
        session = {"session_id": 99, "batch_seq": seq, "last_batch_flag": last}
        body = meta_body(payload=rows, session=session)
        return httpx.post(f"{meta.api_base}/1/users", json=body).status_code

    assert [call(1, False), call(3, False), call(2, True), call(3, False)] == [200, 400, 200, 400]
    meta.held["1"].clear()


def test_meta_fail_next_then_recovers(meta: meta_audience.FakeMetaAudience) -> None:
    meta.fail_next(2)
    rows = {"schema": ["EMAIL"], "data": [[H]]}
    answers = [
        httpx.post(f"{meta.api_base}/1/users", json=meta_body(payload=rows)) for _ in range(3)
    ]
    assert [a.status_code for a in answers] == [500, 500, 200]
    assert answers[0].json()["error"]["is_transient"] is True
    assert meta.held["1"] == [{"EMAIL": H}]
    meta.held["1"].clear()


# ---------------------------------------------------------------- TikTok


@pytest.fixture(scope="module")
def tiktok() -> Iterator[tiktok_audience.FakeTikTokAudience]:
    with tiktok_audience.FakeTikTokAudience() as fake:
        yield fake


def person(*ids: str) -> list[dict[str, Any]]:
    return [{"id": i, "audience_ids": [tiktok_audience.AUDIENCE_ID]} if i else {} for i in ids]


def tiktok_body(**overrides: Any) -> dict[str, Any]:
    body = {
        "advertiser_ids": [tiktok_audience.ADVERTISER_ID],
        "action": "add",
        "id_schema": ["EMAIL_SHA256", "PHONE_SHA256"],
        "batch_data": [person(H, "")],
    }
    return {**body, **overrides}


TIKTOK_REFUSALS = [
    ("other advertiser", tiktok_body(advertiser_ids=["1"]), 40001),
    ("no advertiser", tiktok_body(advertiser_ids=[]), 40002),
    ("bad action", tiktok_body(action="remove"), 40002),
    ("unknown schema key", tiktok_body(id_schema=["EMAIL"]), 40002),
    ("repeated schema key", tiktok_body(id_schema=["EMAIL_SHA256", "EMAIL_SHA256"]), 40002),
    ("row narrower than schema", tiktok_body(batch_data=[person(H)]), 40002),
    ("clear email", tiktok_body(batch_data=[person("a@b.c", "")]), 40002),
    ("person without ids", tiktok_body(batch_data=[person("", "")]), 40002),
    ("empty batch", tiktok_body(batch_data=[]), 40002),
    ("10,001 people", tiktok_body(batch_data=[person(H, "")] * 10_001), 40002),
    (
        "unknown audience",
        tiktok_body(batch_data=[[{"id": H, "audience_ids": ["9"]}, {}]]),
        40002,
    ),
]


@pytest.mark.parametrize(("case", "body", "code"), TIKTOK_REFUSALS)
def test_tiktok_refusals(
    tiktok: tiktok_audience.FakeTikTokAudience, case: str, body: dict[str, Any], code: int
) -> None:
    headers = {"Access-Token": tiktok_audience.ACCESS_TOKEN}
    answer = httpx.post(f"{tiktok.api_base}/segment/mapping/", json=body, headers=headers)
    assert answer.status_code == 200, case
    assert answer.json()["code"] == code and answer.json()["request_id"]
    assert tiktok.size() == 0


def test_tiktok_refuses_a_wrong_token_with_401(tiktok: tiktok_audience.FakeTikTokAudience) -> None:
    answer = httpx.post(
        f"{tiktok.api_base}/segment/mapping/", json=tiktok_body(), headers={"Access-Token": "x"}
    )
    assert answer.status_code == 401 and tiktok.size() == 0


def test_tiktok_adds_and_deletes(tiktok: tiktok_audience.FakeTikTokAudience) -> None:
    headers = {"Access-Token": tiktok_audience.ACCESS_TOKEN}
    url = f"{tiktok.api_base}/segment/mapping/"
    both = tiktok_body(batch_data=[person(H, ""), person("", H2)])
    assert httpx.post(url, json=both, headers=headers).json()["code"] == 0
    assert tiktok.size() == 2
    gone = tiktok_body(action="delete", batch_data=[person("", H2)])
    assert httpx.post(url, json=gone, headers=headers).json()["code"] == 0
    assert tiktok.emails() == {H} and tiktok.size() == 1
    tiktok.held[tiktok_audience.AUDIENCE_ID].clear()


# ---------------------------------------------------------------- Google


@pytest.fixture(scope="module")
def google() -> Iterator[google_audience.FakeGoogleAudience]:
    with google_audience.FakeGoogleAudience() as fake:
        yield fake


DEST = {
    "operatingAccount": {"accountType": "GOOGLE_ADS", "accountId": "1234567890"},
    "productDestinationId": google_audience.USER_LIST_ID,
}
GRANTED = {"adUserData": "CONSENT_GRANTED", "adPersonalization": "CONSENT_GRANTED"}
TERMS = {"customerMatchTermsOfServiceStatus": "ACCEPTED"}


def google_member(*identifiers: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"userData": {"userIdentifiers": list(identifiers)}, **extra}


def ingest(**overrides: Any) -> dict[str, Any]:
    body = {
        "destinations": [DEST],
        "audienceMembers": [google_member({"emailAddress": H}, consent=GRANTED)],
        "encoding": "HEX",
        "termsOfService": TERMS,
    }
    return {**body, **overrides}


GOOGLE_REFUSALS = [
    ("unknown field", "ingest", ingest(extra=1), "INVALID_FORMAT"),
    (
        "consent on remove",
        "remove",
        ingest(termsOfService=None) | {"consent": GRANTED},
        "INVALID_FORMAT",
    ),
    ("no destination", "ingest", ingest(destinations=[]), "INVALID_FORMAT"),
    (
        "unknown user list",
        "ingest",
        ingest(destinations=[{**DEST, "productDestinationId": "5"}]),
        "INVALID_DESTINATION",
    ),
    (
        "not a Google Ads account",
        "ingest",
        ingest(
            destinations=[{**DEST, "operatingAccount": {"accountType": "DV", "accountId": "1"}}]
        ),
        "DESTINATION_ACCOUNT_TYPE_MISMATCH",
    ),
    ("no members", "ingest", ingest(audienceMembers=[]), "TOO_MANY_AUDIENCE_MEMBERS"),
    (
        "10,001 members",
        "ingest",
        ingest(audienceMembers=[google_member({"emailAddress": H})] * 10_001),
        "TOO_MANY_AUDIENCE_MEMBERS",
    ),
    ("no encoding", "ingest", ingest(encoding=None), "REQUIRED_FIELD_MISSING"),
    (
        "clear email",
        "ingest",
        ingest(audienceMembers=[google_member({"emailAddress": "a@b.c"})]),
        "INVALID_HEX_ENCODING",
    ),
    (
        "two kinds in one identifier",
        "ingest",
        ingest(audienceMembers=[google_member({"emailAddress": H, "phoneNumber": H})]),
        "INVALID_FORMAT",
    ),
    (
        "eleven identifiers",
        "ingest",
        ingest(audienceMembers=[google_member(*[{"emailAddress": H}] * 11)]),
        "TOO_MANY_USER_IDENTIFIERS",
    ),
    (
        "incomplete address",
        "ingest",
        ingest(audienceMembers=[google_member({"address": {"givenName": H, "familyName": H}})]),
        "REQUIRED_FIELD_MISSING",
    ),
    (
        "region code",
        "ingest",
        ingest(
            audienceMembers=[
                google_member(
                    {
                        "address": {
                            "givenName": H,
                            "familyName": H,
                            "regionCode": "usa",
                            "postalCode": "1",
                        }
                    }
                )
            ]
        ),
        "INVALID_COUNTRY_CODE",
    ),
    (
        "consent value",
        "ingest",
        ingest(audienceMembers=[google_member({"emailAddress": H}, consent={"adUserData": "YES"})]),
        "INVALID_ENUM_VALUE",
    ),
]


def google_post(
    fake: google_audience.FakeGoogleAudience, verb: str, body: Any, token: str
) -> httpx.Response:
    body = {k: v for k, v in body.items() if v is not None}
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.post(f"{fake.url}/v1/audienceMembers:{verb}", json=body, headers=headers)


@pytest.mark.parametrize(("case", "verb", "body", "reason"), GOOGLE_REFUSALS)
def test_google_refusals(
    google: google_audience.FakeGoogleAudience, case: str, verb: str, body: Any, reason: str
) -> None:
    token = google.issue_token(google_audience.DATAMANAGER)
    answer = google_post(google, verb, body, token)
    assert answer.status_code == 400, case
    error = answer.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT"
    violations = [v for d in error["details"] for v in d.get("fieldViolations", [])]
    assert reason in {v["reason"] for v in violations}
    assert google.size() == 0


def test_google_refuses_missing_terms_a_bad_token_and_a_wrong_scope(
    google: google_audience.FakeGoogleAudience,
) -> None:
    token = google.issue_token(google_audience.DATAMANAGER)
    no_terms = google_post(google, "ingest", ingest(termsOfService=None), token)
    assert no_terms.status_code == 400
    assert no_terms.json()["error"]["details"][0]["reason"] == "TERMS_AND_CONDITIONS_NOT_SIGNED"
    assert google_post(google, "ingest", ingest(), "ya29.nope").status_code == 401
    adwords = google.issue_token("https://www.googleapis.com/auth/adwords")
    assert google_post(google, "ingest", ingest(), adwords).status_code == 403
    assert google.size() == 0


def test_google_holds_consenting_members_and_removes_by_any_identifier(
    google: google_audience.FakeGoogleAudience,
) -> None:
    token = google.issue_token(google_audience.DATAMANAGER)
    denied = {"adUserData": "CONSENT_GRANTED", "adPersonalization": "CONSENT_DENIED"}
    members = [
        google_member({"emailAddress": H}, {"phoneNumber": H2}, consent=GRANTED),
        google_member({"emailAddress": "c" * 64}, consent=denied),
    ]
    answer = google_post(google, "ingest", ingest(audienceMembers=members), token)
    assert answer.status_code == 200 and answer.json()["requestId"]
    assert google.emails() == {H}
    remove = {
        "destinations": [DEST],
        "audienceMembers": [google_member({"phoneNumber": H2})],
        "encoding": "HEX",
    }
    assert google_post(google, "remove", remove, token).status_code == 200
    assert google.size() == 0
    google.fail_next(1)
    assert google_post(google, "ingest", ingest(), token).status_code == 503
    assert google.size() == 0
