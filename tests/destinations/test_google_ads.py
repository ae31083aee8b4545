"""google_ads: exact request bodies for both APIs, and outcomes from the fake Google over HTTP."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from firstparty.destinations import base, google_ads, google_rpc, registry
from firstparty.errors import PermanentError
from firstparty.event import ClickId, Event
from tests import factories
from tests.fakes import google
from tests.fakes.server import send

WHEN = datetime(2026, 1, 15, 14, 32, 18, tzinfo=UTC)
EMAIL = "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"  # john_smith@gmail.com
PHONE = "1e231c66011e7a2d867a9cfae267a6aff103cf4913640b6e71a99850fc0ffbc8"  # +16505551212
GMAIL_DOTLESS = "3586de92bb3636d0885a12eff961429a32e4ebd764b96f50d85d016f9338d586"
GCLID = "Cj0KCQiA-example"
UPLOAD = WHEN + timedelta(hours=1)  # when the golden requests are built (the click window's end)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def click(kind: str, value: str, days_before: float = 1) -> ClickId:
    return ClickId(kind, value, WHEN - timedelta(days=days_before))


lead = factories.example(
    occurred_at=WHEN,
    received_at=WHEN,
    properties={"value": 49.0, "currency": "USD"},
    user={"em": EMAIL, "ph": "e323ec62" + "0" * 56, "ph_e164": PHONE, "fn": "a" * 64},
    context={"ip": "203.0.113.7", "user_agent": "Mozilla/5.0"},
    consent={"ad_user_data": "granted", "ad_personalization": "granted"},
    click_ids=(click("gclid", GCLID),),
)


# ---------------------------------------------------------------- golden bodies


def uploading(now: datetime = UPLOAD, **overrides: Any) -> google_ads.GoogleAds:
    """The adapter with these settings, building its requests at `now`."""
    ads = factories.google(**overrides)
    ads.clock = lambda: now
    return ads


def built(*events: Event, now: datetime = UPLOAD) -> Any:
    """The JSON body of the Data Manager request for these events (token "t")."""
    return uploading(now).build(list(events), "t")[0].json


def test_data_manager_body_is_the_documented_ingest_request() -> None:
    [request] = uploading().build([lead()], token="ya29.token")
    assert request.method == "POST"
    assert request.url == "https://datamanager.googleapis.com/v1/events:ingest"
    assert request.headers == {
        "Authorization": "Bearer ya29.token",
        "Content-Type": "application/json",
    }
    assert request.event_pks == ("ev-1",)
    assert request.secrets == ("ya29.token",)
    assert request.json == {
        "destinations": [
            {
                "reference": "987654321",
                "operatingAccount": {"accountType": "GOOGLE_ADS", "accountId": "1234567890"},
                "loginAccount": {"accountType": "GOOGLE_ADS", "accountId": "9876543210"},
                "productDestinationId": "987654321",
            }
        ],
        "events": [
            {
                "destinationReferences": ["987654321"],
                "transactionId": "event-ev-1",
                "eventTimestamp": "2026-01-15T14:32:18Z",
                "eventSource": "WEB",
                "conversionValue": 49.0,
                "currency": "USD",
                "adIdentifiers": {"gclid": GCLID},
                "userData": {"userIdentifiers": [{"emailAddress": EMAIL}, {"phoneNumber": PHONE}]},
                "consent": {
                    "adUserData": "CONSENT_GRANTED",
                    "adPersonalization": "CONSENT_GRANTED",
                },
            }
        ],
        "encoding": "HEX",
        "validateOnly": False,
    }


def test_legacy_body_is_the_documented_upload_request() -> None:
    ads = uploading(api="google_ads_api", developer_token="ABCdef123")
    [request] = ads.build([lead()], token="ya29.token")
    assert request.url == (
        "https://googleads.googleapis.com/v26/customers/1234567890:uploadClickConversions"
    )
    assert request.headers == {
        "Authorization": "Bearer ya29.token",
        "Content-Type": "application/json",
        "developer-token": "ABCdef123",
        "login-customer-id": "9876543210",
    }
    assert set(request.secrets) == {"ya29.token", "ABCdef123"}
    assert request.json == {
        "conversions": [
            {
                "conversionAction": "customers/1234567890/conversionActions/987654321",
                "conversionDateTime": "2026-01-15 14:32:18+00:00",
                "gclid": GCLID,
                "conversionValue": 49.0,
                "currencyCode": "USD",
                "orderId": "event-ev-1",
                "userIdentifiers": [{"hashedEmail": EMAIL}, {"hashedPhoneNumber": PHONE}],
                "consent": {"adUserData": "GRANTED"},
            }
        ],
        "partialFailure": True,
    }


def test_the_gmail_rule_hash_is_preferred_for_google() -> None:
    event = lead(user={"em": EMAIL, "em_google": GMAIL_DOTLESS})
    body = built(event)
    assert body["events"][0]["userData"] == {"userIdentifiers": [{"emailAddress": GMAIL_DOTLESS}]}


def test_exactly_one_click_id_the_most_recent_of_any_kind() -> None:
    every = (click("gbraid", "gb-1", 2), click("wbraid", "wb-1", 1), click("gclid", GCLID, 3))
    braids = (click("gbraid", "gb-1"), click("wbraid", "wb-1"))  # a tie: wbraid, the web id
    tied = (click("wbraid", "wb-1"), click("gclid", GCLID))  # a tie: gclid
    body = built(lead(click_ids=every), lead("ev2", click_ids=braids), lead("ev3", click_ids=tied))
    assert [e["adIdentifiers"] for e in body["events"]] == [
        {"wbraid": "wb-1"},
        {"wbraid": "wb-1"},
        {"gclid": GCLID},
    ]
    only_gbraid = built(lead(click_ids=(click("gbraid", "gb-1"),)))
    assert only_gbraid["events"][0]["adIdentifiers"] == {"gbraid": "gb-1"}


def test_a_click_first_seen_after_the_conversion_is_not_credited() -> None:
    later = (click("gclid", "after", -0.01), click("wbraid", "before", 5))
    assert built(lead(click_ids=later))["events"][0]["adIdentifiers"] == {"wbraid": "before"}
    only_later = built(lead(click_ids=(click("gclid", "after", -0.01),)))
    assert "adIdentifiers" not in only_later["events"][0]
    seen_with_it = built(lead(click_ids=(click("gclid", "same", 0),)))  # landed and converted
    assert seen_with_it["events"][0]["adIdentifiers"] == {"gclid": "same"}


def test_the_most_recent_gclid_is_sent() -> None:
    clicks = (click("gclid", "old", 20), click("gclid", "new", 2), click("gclid", "mid", 10))
    body = built(lead(click_ids=clicks))
    assert body["events"][0]["adIdentifiers"] == {"gclid": "new"}


def test_clicks_older_than_the_click_window_at_upload_are_dropped() -> None:
    stale = (click("wbraid", "wb-1", 80), click("gclid", "stale", 89))
    body = built(lead(click_ids=stale), now=WHEN + timedelta(days=2))  # 91 days at upload
    assert body["events"][0]["adIdentifiers"] == {"wbraid": "wb-1"}
    only_stale = built(lead(click_ids=(click("gclid", "stale", 89),)), now=WHEN + timedelta(days=2))
    assert "adIdentifiers" not in only_stale["events"][0]
    assert "userData" in only_stale["events"][0]  # still an enhanced conversion for leads
    assert built(lead(click_ids=(click("gclid", "g", 89),)))["events"][0]["adIdentifiers"]
    short = uploading(click_window_days=30).build([lead(click_ids=(click("gclid", "g", 31),))], "t")
    assert "adIdentifiers" not in short[0].json["events"][0]


def test_the_google_tag_cookie_supplies_a_gclid_seen_at_its_own_time() -> None:
    seen = int((WHEN - timedelta(days=2)).timestamp())
    event = lead(click_ids=(), context={"gcl_aw": f"GCL.{seen}.CjwKCAjw-cookie"})
    body = built(event)
    assert body["events"][0]["adIdentifiers"] == {"gclid": "CjwKCAjw-cookie"}


def test_yesterdays_wbraid_beats_a_sixty_day_old_gclid_from_the_cookie() -> None:
    sixty_days = int((WHEN - timedelta(days=60)).timestamp())
    event = lead(
        click_ids=(click("wbraid", "wb-yesterday", 1),),
        context={"gcl_aw": f"GCL.{sixty_days}.CjwKCAjw-old"},
    )
    assert built(event)["events"][0]["adIdentifiers"] == {"wbraid": "wb-yesterday"}
    later = int((WHEN + timedelta(minutes=5)).timestamp())  # a cookie set after the conversion
    cookie_after = lead(click_ids=(), context={"gcl_aw": f"GCL.{later}.CjwKCAjw-later"})
    assert "adIdentifiers" not in built(cookie_after)["events"][0]


def test_the_address_is_sent_with_names_hashed_and_postal_and_country_in_clear() -> None:
    fn, ln = sha("john"), sha("smith")
    user = {"em": EMAIL, "fn": fn, "ln": ln, "postal_code": "94043", "country_code": "us"}
    body = built(lead(user=user))
    assert body["events"][0]["userData"]["userIdentifiers"] == [
        {"emailAddress": EMAIL},
        {
            "address": {
                "givenName": fn,
                "familyName": ln,
                "regionCode": "US",
                "postalCode": "94043",
            }
        },
    ]
    assert google.ingest_violations(body) == []
    partial = built(
        lead(user={"em": EMAIL, "fn": fn, "postal_code": "94043", "country_code": "US"})
    )
    assert partial["events"][0]["userData"]["userIdentifiers"] == [{"emailAddress": EMAIL}]
    denied = built(lead(user=user, consent={"ad_user_data": "denied"}))
    assert "userData" not in denied["events"][0]
    only_address = lead(click_ids=(), user={k: v for k, v in user.items() if k != "em"})
    assert uploading().skip(only_address, UPLOAD) is None  # the address alone can match
    legacy = uploading(api="google_ads_api").build([lead(user=user)], "t")[0].json
    assert legacy["conversions"][0]["userIdentifiers"] == [{"hashedEmail": EMAIL}]


def test_denied_ad_user_data_sends_no_identifiers_but_the_consent() -> None:
    event = lead(consent={"ad_user_data": "denied", "ad_personalization": "denied"})
    sent = built(event)
    assert "userData" not in sent["events"][0] and "encoding" not in sent
    assert sent["events"][0]["consent"] == {
        "adUserData": "CONSENT_DENIED",
        "adPersonalization": "CONSENT_DENIED",
    }
    legacy = uploading(api="google_ads_api").build([event], "t")[0].json["conversions"][0]
    assert legacy["consent"] == {"adUserData": "DENIED"} and "userIdentifiers" not in legacy


def test_unstated_consent_is_left_out() -> None:
    sent = built(lead(consent={}))
    assert "consent" not in sent["events"][0]


def test_server_events_use_the_configured_event_source_and_optional_device_info() -> None:
    ads = uploading(server_event_source="PHONE", send_ip_address=True, send_user_agent=True)
    event = lead(source_kind="server", properties={"value": 10}, click_ids=())
    sent = ads.build([event], "t")[0].json["events"][0]
    assert sent["eventSource"] == "PHONE"
    assert sent["eventDeviceInfo"] == {"userAgent": "Mozilla/5.0", "ipAddress": "203.0.113.7"}
    assert "currency" not in sent and sent["conversionValue"] == 10.0


def test_more_than_ten_conversion_actions_make_more_requests() -> None:
    actions = {f"E{i}": str(100 + i) for i in range(12)}
    events = [lead(f"ev{i}", name=f"E{i}") for i in range(12)]
    requests = uploading(conversion_actions=actions).build(events, "t")
    assert [len(r.json["destinations"]) for r in requests] == [10, 2]
    assert [len(r.event_pks) for r in requests] == [10, 2]


def test_wants_follows_conversion_actions() -> None:
    ads = uploading()
    assert ads.wants("track", "Lead") and ads.wants("track", "Purchase")
    assert not ads.wants("page", "page") and not ads.wants("track", "Signup")


def test_skip_keeps_an_eight_day_old_event_and_drops_unmatchable_ones() -> None:
    ads = uploading()
    now = WHEN + timedelta(days=8)
    assert ads.skip(lead(source_kind="server"), now) is None
    too_old = ads.skip(lead(), WHEN + timedelta(days=91))
    assert too_old is not None and "90.0 days" in too_old
    nothing = lead(click_ids=(), user={})
    assert "cannot match" in (ads.skip(nothing, now) or "")
    denied = lead(click_ids=(), consent={"ad_user_data": "denied"})
    assert "ad_user_data denied" in (ads.skip(denied, now) or "")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"oauth": "not json"}, "JSON credentials"),
        ({"oauth": '{"client_id": "x"}'}, "client_secret, refresh_token"),
        ({"customer_id": "12345"}, "10-digit"),
        ({"conversion_actions": {"Lead": "customers/1/conversionActions/2"}}, "numeric"),
        ({"events": {"Lead": "Lead"}}, "conversion_actions"),
        ({"api": "ads"}, "api"),
    ],
)
def test_settings_refuse_bad_values(override: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        uploading(**override)


def test_example_settings_validate() -> None:
    settings = registry.parse(dict(google_ads.GoogleAds.example_settings), 0)
    assert isinstance(settings, google_ads.GoogleAdsSettings)
    with pytest.raises(ValidationError):
        google_ads.GoogleAdsSettings.model_validate({**settings.model_dump(), "bogus": 1})


def test_token_request_is_a_refresh_token_grant() -> None:
    request = uploading().token_request()
    assert request.url == "https://oauth2.googleapis.com/token"
    assert request.headers == {"Content-Type": "application/x-www-form-urlencoded"}
    assert request.body == (
        b"grant_type=refresh_token&client_id=1234.apps&client_secret=GOCSPX-x&"
        b"refresh_token=1%2F%2F0abc"
    )
    assert set(request.secrets) == {"GOCSPX-x", "1//0abc"}


# ---------------------------------------------------------------- through the fake, over HTTP


@pytest.fixture
def fake() -> Iterator[google.FakeGoogle]:
    with google.FakeGoogle() as server:
        assert isinstance(server, google.FakeGoogle)
        server.add_refresh_token(
            "1234.apps", "GOCSPX-x", "1//0abc", google.DATAMANAGER, google.ADWORDS
        )
        server.clock = lambda: UPLOAD + timedelta(seconds=1)  # Google's clock, just after ours
        yield server


def at(fake: google.FakeGoogle, **overrides: Any) -> google_ads.GoogleAds:
    """The adapter pointed at the fake, building its requests at the fake's time."""
    legacy = overrides.get("api") == "google_ads_api"
    ads = factories.google(
        api_base=fake.url + ("/v26" if legacy else "/v1"),
        token_url=fake.url + "/token",
        **overrides,
    )
    ads.clock = fake.clock
    return ads


def token(ads: google_ads.GoogleAds) -> str:
    request = ads.token_request()
    assert request is not None
    return ads.read_token(send(request))[0]


def deliver(
    ads: google_ads.GoogleAds, events: Sequence[Event], bearer: str | None = None
) -> dict[str, base.Outcome]:
    outcomes: dict[str, base.Outcome] = {}
    for request in ads.build(events, bearer or token(ads)):
        outcomes.update(ads.interpret(request, send(request)))
    return outcomes


def test_data_manager_accepts_a_lead(fake: google.FakeGoogle) -> None:
    outcome = deliver(at(fake), [lead()])["ev-1"]
    assert isinstance(outcome, base.Delivered) and "requestId" in outcome.detail
    assert fake.ingested[("987654321", "event-ev-1")]["adIdentifiers"] == {"gclid": GCLID}
    assert fake.requests[-1].headers["authorization"].startswith("Bearer ya29.fake-")


def test_an_eight_day_old_server_event_is_accepted(fake: google.FakeGoogle) -> None:
    fake.clock = lambda: datetime.now(UTC)
    event = lead(source_kind="server", occurred_at=datetime.now(UTC) - timedelta(days=8))
    event = lead(
        source_kind="server",
        occurred_at=event.occurred_at,
        click_ids=(ClickId("gclid", GCLID, event.occurred_at - timedelta(days=1)),),
    )
    ads = at(fake)
    assert ads.skip(event, datetime.now(UTC)) is None
    assert isinstance(deliver(ads, [event])["ev-1"], base.Delivered)
    assert ("987654321", "event-ev-1") in fake.ingested


def test_a_resend_is_an_adjustment_not_a_second_conversion(fake: google.FakeGoogle) -> None:
    ads = at(fake)
    deliver(ads, [lead()])
    deliver(ads, [lead()])
    assert len(fake.ingested) == 1 and fake.adjustments == 1


def test_validate_only_stores_nothing_and_is_a_test_send(fake: google.FakeGoogle) -> None:
    outcome = deliver(at(fake, validate_only=True), [lead()])["ev-1"]
    assert outcome == base.Delivered("validateOnly: passed validation, nothing stored", test=True)
    assert fake.ingested == {} and fake.status_calls == {}  # nothing to follow up
    legacy = deliver(at(fake, api="google_ads_api", validate_only=True), [lead()])["ev-1"]
    assert legacy == base.Delivered("validateOnly: passed validation", test=True)
    assert fake.uploaded == []


def follow(ads: google_ads.GoogleAds, events: Sequence[Event]) -> dict[str, base.Outcome]:
    """Ingest, then ask requestStatus:retrieve once per accepted request."""
    accepted: dict[str, list[Event]] = {}
    for pk, outcome in deliver(ads, events).items():
        assert isinstance(outcome, base.Delivered) and outcome.follow_up, outcome
        accepted.setdefault(outcome.follow_up, []).extend(e for e in events if e.pk == pk)
    answers: dict[str, base.Outcome] = {}
    for request_id, asked in accepted.items():  # as the worker asks: once per request id
        request = ads.follow_up(request_id, asked, token(ads))
        answers.update(ads.interpret_follow_up(request, send(request), asked))
    return answers


def test_an_accepted_request_is_followed_up_until_google_is_done(fake: google.FakeGoogle) -> None:
    ads = at(fake)
    [accepted] = deliver(ads, [lead()]).values()
    assert isinstance(accepted, base.Delivered) and accepted.follow_up in fake.status_calls
    assert (ads.follow_up_delay, ads.follow_up_deadline) == (1800, 25 * 3600)
    request = ads.follow_up(accepted.follow_up, [lead()], "ya29.t")
    assert request.method == "GET" and request.json is None and request.event_pks == ("ev-1",)
    assert request.url == (f"{fake.url}/v1/requestStatus:retrieve?requestId={accepted.follow_up}")
    assert request.headers == {"Authorization": "Bearer ya29.t"}
    bearer = token(ads)
    ask = ads.follow_up(accepted.follow_up, [lead()], bearer)
    first = ads.interpret_follow_up(ask, send(ask), [lead()])["ev-1"]
    assert isinstance(first, base.Retry) and "PROCESSING" in first.reason
    fake.match_rate = "MATCH_RATE_RANGE_41_TO_50"
    done = ads.interpret_follow_up(ask, send(ask), [lead()])["ev-1"]
    assert done == base.Delivered(
        "Google SUCCESS (conversion action 987654321): 1 record(s); match rate 41_TO_50"
    )


def test_an_expired_click_is_reported_failed_by_the_request_status(
    fake: google.FakeGoogle,
) -> None:
    # Google's click is older than our first sighting says: EVENT_TOO_OLD, asynchronously.
    fake.click(GCLID, UPLOAD - timedelta(days=91))
    fake.processing_calls = 0
    outcome = follow(at(fake), [lead()])["ev-1"]
    assert isinstance(outcome, base.Rejected)
    assert outcome.reason == (
        "Google FAILED (conversion action 987654321): 1 record(s); "
        "errors: PROCESSING_ERROR_REASON_EVENT_TOO_OLD x1"
    )
    assert fake.ingested == {}


def test_partial_success_fails_the_events_only_when_all_of_them_failed(
    fake: google.FakeGoogle,
) -> None:
    fake.click("Cj-after", WHEN + timedelta(minutes=5))  # Google saw the click after the lead
    fake.processing_calls = 0
    events = [lead("ev-1"), lead("ev2", click_ids=(click("gclid", "Cj-after"),))]
    outcomes = follow(at(fake), events)
    for outcome in outcomes.values():
        assert isinstance(outcome, base.Delivered)
        assert "PARTIAL_SUCCESS" in outcome.detail
        assert "PROCESSING_ERROR_REASON_INVALID_EVENT x1" in outcome.detail
        assert "does not say which of our 2 failed" in outcome.detail


def test_an_unknown_request_id_fails_the_follow_up(fake: google.FakeGoogle) -> None:
    ads = at(fake)
    ask = ads.follow_up("no-such-request", [lead()], token(ads))
    outcome = ads.interpret_follow_up(ask, send(ask), [lead()])["ev-1"]
    assert isinstance(outcome, base.Rejected) and "INVALID_REQUEST_ID" in outcome.reason


def test_an_event_from_the_future_is_refused_by_google(fake: google.FakeGoogle) -> None:
    future = lead(occurred_at=UPLOAD + timedelta(minutes=10))
    outcome = deliver(at(fake), [future])["ev-1"]
    assert isinstance(outcome, base.Rejected) and "EVENT_TIME_INVALID" in outcome.reason


def test_a_spent_daily_quota_parks_until_midnight_pacific(fake: google.FakeGoogle) -> None:
    fake.daily_requests = 1
    ads = at(fake)
    bearer = token(ads)
    assert isinstance(deliver(ads, [lead()], bearer)["ev-1"], base.Delivered)
    parked = deliver(ads, [lead("ev2")], bearer)["ev2"]
    assert isinstance(parked, base.Retry) and parked.after is not None
    assert (
        "daily quota spent" in parked.reason and "IngestRequestsPerDayPerProject" in parked.reason
    )
    reset = datetime.now(UTC) + timedelta(seconds=parked.after)
    pacific = reset.astimezone(google.QUOTA_DAY)
    assert (pacific.hour, pacific.minute) in ((0, 0), (0, 1))
    legacy = at(fake, api="google_ads_api")
    fake.script(google.daily_quota_spent(legacy=True))
    held = deliver(legacy, [lead()], bearer)["ev-1"]
    assert isinstance(held, base.Retry) and held.after is not None and held.after > 60
    fake.script(google.exhausted(retry_after=None))
    short = deliver(ads, [lead()], bearer)["ev-1"]
    assert isinstance(short, base.Retry) and short.after is None  # a rate limit: our backoff


def test_until_quota_reset_follows_pacific_time() -> None:
    summer = datetime(2026, 7, 1, 6, 30, tzinfo=UTC)  # 23:30 PDT
    assert google_rpc.until_quota_reset(summer) == 30 * 60 + 60
    winter = datetime(2026, 1, 15, 7, 0, tzinfo=UTC)  # 23:00 PST
    assert google_rpc.until_quota_reset(winter) == 3600 + 60


def test_a_stale_token_is_refused_with_401(fake: google.FakeGoogle) -> None:
    ads = at(fake)
    bearer = token(ads)
    fake.expire_tokens()
    outcome = deliver(ads, [lead()], bearer)["ev-1"]
    assert isinstance(outcome, base.Rejected) and "UNAUTHENTICATED" in outcome.reason
    assert isinstance(deliver(ads, [lead()])["ev-1"], base.Delivered)  # with a new token


def test_a_bad_token_is_rejected_with_googles_message(fake: google.FakeGoogle) -> None:
    outcome = deliver(at(fake), [lead()], bearer="ya29.revoked")["ev-1"]
    assert isinstance(outcome, base.Rejected)
    assert outcome.reason.startswith("UNAUTHENTICATED: Request had invalid authentication")
    assert "ACCESS_TOKEN_EXPIRED" in outcome.reason


def test_a_revoked_refresh_token_fails_permanently(fake: google.FakeGoogle) -> None:
    revoked = factories.GOOGLE_CREDENTIALS | {"refresh_token": "1//revoked"}
    ads = at(fake, oauth=json.dumps(revoked))
    with pytest.raises(PermanentError, match="invalid_grant: Token has been expired or revoked"):
        token(ads)


def test_a_token_without_the_datamanager_scope_is_refused(fake: google.FakeGoogle) -> None:
    outcome = deliver(at(fake), [lead()], bearer=fake.issue_token(google.ADWORDS))["ev-1"]
    assert isinstance(outcome, base.Rejected)
    assert "PERMISSION_DENIED" in outcome.reason and "SCOPE_INSUFFICIENT" in outcome.reason


@pytest.mark.parametrize("code", [500, 503, 504])
def test_server_errors_are_retried(fake: google.FakeGoogle, code: int) -> None:
    ads = at(fake)
    bearer = token(ads)
    fake.script(google.unavailable(code))
    outcome = deliver(ads, [lead()], bearer)["ev-1"]
    assert isinstance(outcome, base.Retry) and outcome.after is None
    assert isinstance(deliver(ads, [lead()], bearer)["ev-1"], base.Delivered)


def test_quota_exhaustion_is_retried_after_retry_after(fake: google.FakeGoogle) -> None:
    ads = at(fake)
    bearer = token(ads)
    fake.script(google.exhausted(retry_after=30))
    outcome = deliver(ads, [lead()], bearer)["ev-1"]
    assert isinstance(outcome, base.Retry) and outcome.after == 30.0
    assert "RESOURCE_EXHAUSTED" in outcome.reason and "quota" in outcome.reason


def test_fail_fast_rejects_the_offending_event_and_retries_the_rest(
    fake: google.FakeGoogle,
) -> None:
    ads = at(fake)
    bad = lead("ev2", user={"em": "f" * 63})
    events = [lead("ev-1"), bad, lead("ev3")]
    outcomes = deliver(ads, events)
    assert isinstance(outcomes["ev2"], base.Rejected)
    assert "events[1].user_data.user_identifiers[0].emailAddress" in outcomes["ev2"].reason
    assert "INVALID_HEX_ENCODING" in outcomes["ev2"].reason
    assert outcomes["ev-1"] == outcomes["ev3"]
    assert isinstance(outcomes["ev-1"], base.Retry) and outcomes["ev-1"].after == 0
    assert fake.ingested == {}  # fail-fast: nothing of the request was stored
    again = deliver(ads, [e for e in events if e.pk != "ev2"])
    assert all(isinstance(o, base.Delivered) for o in again.values())
    assert len(fake.ingested) == 2


def test_an_unattributed_400_sends_each_event_alone(fake: google.FakeGoogle) -> None:
    ads = at(fake)
    bearer = token(ads)
    fake.script(google.invalid_argument([], reason="INVALID_EVENT"))
    outcomes = deliver(ads, [lead("ev-1"), lead("ev2")], bearer)
    assert all(isinstance(o, base.Retry) and o.alone for o in outcomes.values())


def test_account_level_400_rejects_all(fake: google.FakeGoogle) -> None:
    ads = at(fake)
    bearer = token(ads)
    violation = ("destinations[0]", "Terms not signed.", "TERMS_AND_CONDITIONS_NOT_SIGNED")
    fake.script(google.invalid_argument([violation]))
    outcomes = deliver(ads, [lead("ev-1"), lead("ev2")], bearer)
    assert all(isinstance(o, base.Rejected) for o in outcomes.values())


def test_a_service_account_gets_a_token(fake: google.FakeGoogle) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    email = "fp@project.iam.gserviceaccount.com"
    fake.add_service_account(email, key.public_key())
    creds = {"type": "service_account", "client_email": email, "private_key": pem}
    ads = at(fake, oauth=json.dumps({**creds, "private_key_id": "k1"}))
    assert isinstance(deliver(ads, [lead()])["ev-1"], base.Delivered)


# ---------------------------------------------------------------- legacy API through the fake


def test_legacy_upload_succeeds(fake: google.FakeGoogle) -> None:
    outcome = deliver(at(fake, api="google_ads_api"), [lead()])["ev-1"]
    assert outcome == base.Delivered("uploaded, jobId 3456789012")
    assert fake.uploaded[0]["orderId"] == "event-ev-1"


def test_legacy_partial_failure_maps_rows_to_events(fake: google.FakeGoogle) -> None:
    fake.row_errors = {"bad-gclid": "UNPARSEABLE_GCLID", "recent": "TOO_RECENT_EVENT"}
    events = [
        lead("ev-1"),
        lead("ev2", click_ids=(click("gclid", "bad-gclid"),)),
        lead("ev3", click_ids=(click("gclid", "recent"),)),
    ]
    outcomes = deliver(at(fake, api="google_ads_api"), events)
    assert isinstance(outcomes["ev-1"], base.Delivered)
    assert outcomes["ev2"] == base.Rejected("UNPARSEABLE_GCLID: Scripted UNPARSEABLE_GCLID.")
    assert outcomes["ev3"] == base.Retry("TOO_RECENT_EVENT: Scripted TOO_RECENT_EVENT.", 21600)


def test_legacy_google_enforces_its_time_rules_per_click(fake: google.FakeGoogle) -> None:
    fake.click("recent", UPLOAD - timedelta(hours=2))
    fake.click("expired", UPLOAD - timedelta(days=91))
    fake.click("after", WHEN + timedelta(minutes=1))  # Google's click came after the lead
    events = [
        lead("ev-1", click_ids=(click("gclid", "recent", 0),)),
        lead("ev2", click_ids=(click("gclid", "expired"),)),
        lead("ev3", click_ids=(click("gclid", "after"),)),
    ]
    outcomes = deliver(at(fake, api="google_ads_api"), events)
    recent = outcomes["ev-1"]
    assert isinstance(recent, base.Retry) and recent.after == 6 * 3600
    assert recent.reason.startswith("TOO_RECENT_EVENT: The click associated")
    assert isinstance(outcomes["ev2"], base.Rejected)
    assert outcomes["ev2"].reason.startswith("EXPIRED_EVENT")
    assert isinstance(outcomes["ev3"], base.Rejected)
    assert outcomes["ev3"].reason.startswith("CONVERSION_PRECEDES_EVENT")
    assert fake.uploaded == []


def test_legacy_unmatched_lead_without_click_is_delivered(fake: google.FakeGoogle) -> None:
    outcome = deliver(at(fake, api="google_ads_api"), [lead(click_ids=(), user={})])["ev-1"]
    assert isinstance(outcome, base.Delivered) and "CLICK_NOT_FOUND" in outcome.detail


def test_legacy_not_allowlisted_tells_the_operator_to_switch(fake: google.FakeGoogle) -> None:
    fake.allowlisted = False
    outcome = deliver(at(fake, api="google_ads_api"), [lead()])["ev-1"]
    assert isinstance(outcome, base.Rejected)
    assert "CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE" in outcome.reason
    assert 'api = "data_manager"' in outcome.reason


def test_legacy_needs_the_adwords_scope(fake: google.FakeGoogle) -> None:
    ads = at(fake, api="google_ads_api")
    outcome = deliver(ads, [lead()], bearer=fake.issue_token(google.DATAMANAGER))["ev-1"]
    assert isinstance(outcome, base.Rejected) and "SCOPE_INSUFFICIENT" in outcome.reason
