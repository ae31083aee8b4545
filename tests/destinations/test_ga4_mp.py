"""ga4_mp: exact request bodies, grouping by client_id, and outcomes from the fake GA4 over HTTP."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from firstparty import platforms
from firstparty.destinations import base, ga4_mp, registry
from firstparty.event import Event
from tests import factories
from tests.fakes import ga4
from tests.fakes.server import Reply, send

WHEN = datetime(2026, 1, 1, 0, 0, 0, 250000, tzinfo=UTC)


lead = factories.example(
    occurred_at=WHEN,
    received_at=WHEN,
    url="https://www.example.com/contact",
    properties={"value": 0, "currency": "usd", "form": "contact"},
    user={"em": "a" * 64, "ph_e164": "b" * 64, "ph": "c" * 64},
    context={
        "ga": "GA1.1.1234567890.1767225600",
        "ga_session": "OTHER1:1767000000:9,ABC123XYZ:1767225000:3",
        "ip": "203.0.113.7",
    },
    consent={"ad_user_data": "granted", "ad_personalization": "denied"},
    visitor_id="v-1",
    user_id="u_8f3a2c",
)


# ---------------------------------------------------------------- golden bodies


def test_body_is_the_documented_collect_request() -> None:
    [request] = factories.ga4().build([lead()])
    assert request.method == "POST"
    assert request.url == (
        "https://www.google-analytics.com/mp/collect?measurement_id=G-ABC123XYZ&api_secret=s3cr3t"
    )
    assert request.secrets == ("s3cr3t",)
    assert request.headers == {"Content-Type": "application/json"}
    assert request.json == {
        "client_id": "1234567890.1767225600",
        "user_id": "u_8f3a2c",
        "user_data": {"sha256_email_address": ["a" * 64], "sha256_phone_number": ["b" * 64]},
        "consent": {"ad_user_data": "GRANTED", "ad_personalization": "DENIED"},
        "events": [
            {
                "name": "generate_lead",
                "timestamp_micros": 1767225600250000,
                "params": {
                    "value": 0,
                    "currency": "USD",
                    "page_location": "https://www.example.com/contact",
                    "session_id": "1767225000",
                    "engagement_time_msec": 1,
                    "form": "contact",
                },
            }
        ],
    }


def test_purchase_params_and_page_view() -> None:
    items = [{"item_id": "SKU-1", "price": 10.0, "quantity": 2}]
    purchase = lead(
        name="Purchase",
        properties={"value": 20.0, "transaction_id": "T-1", "items": items, "note": "x" * 150},
        referrer="https://www.google.com/",
        title="Thanks",
    )
    page = lead("ev2", type="page", name="page", properties={})
    body = factories.ga4(currency="EUR").build([purchase, page])[0].json
    assert body["events"][0] == {
        "name": "purchase",
        "timestamp_micros": 1767225600250000,
        "params": {
            "value": 20.0,
            "currency": "EUR",
            "page_location": "https://www.example.com/contact",
            "page_referrer": "https://www.google.com/",
            "page_title": "Thanks",
            "session_id": "1767225000",
            "engagement_time_msec": 1,
            "transaction_id": "T-1",
            "items": items,
            "note": "x" * 100,
        },
    }
    assert body["events"][1]["name"] == "page_view"


@pytest.mark.parametrize(
    ("properties", "expected"),
    [({"order_id": "O-7"}, "O-7"), ({"transaction_id": 42}, "42"), ({}, "event-ev-1")],
)
def test_a_purchase_always_carries_a_transaction_id(properties: Any, expected: str) -> None:
    event = lead(name="Order Completed", properties=properties)
    [sent] = factories.ga4(events=None).build([event])[0].json["events"]
    assert (sent["name"], sent["params"]["transaction_id"]) == ("purchase", expected)


@pytest.mark.parametrize(
    ("context", "session_id"),
    [
        ({"ga_session": "ABC123XYZ:1767225000"}, "1767225000"),
        # another stream's cookie only: the server-side session of the visitor
        ({"ga_session": "OTHER1:1767000000:9", "session_id": "1767224000"}, "1767224000"),
        ({"session_id": "1767224000", "session_number": "2"}, "1767224000"),
        ({"ga_session": "not a session", "session_id": "1767224000"}, "1767224000"),
    ],
)
def test_session_id_from_this_streams_cookie_else_the_server_session(
    context: dict[str, str], session_id: str
) -> None:
    params = factories.ga4().build([lead(context=context)])[0].json["events"][0]["params"]
    assert params["session_id"] == session_id
    assert params["engagement_time_msec"] == 1


def test_without_any_session_the_event_still_carries_engagement_time() -> None:
    params = factories.ga4().build([lead(context={})])[0].json["events"][0]["params"]
    assert "session_id" not in params and params["engagement_time_msec"] == 1


def test_user_data_is_left_out_when_ad_user_data_is_denied_or_turned_off() -> None:
    denied = lead(consent={"ad_user_data": "denied"})
    assert "user_data" not in factories.ga4().build([denied])[0].json
    assert "user_data" not in factories.ga4(send_user_data=False).build([lead()])[0].json


def test_a_batch_is_split_to_keep_each_body_under_130_kb() -> None:
    big = {f"p{i}": "x" * 100 for i in range(20)}  # ~2.3 kB of params per event
    events = [lead(f"e{i}", properties={**big, "items": [big] * 3}) for i in range(25)]
    requests = factories.ga4().build(events)
    sizes = [len(msgspec.json.encode(r.json)) for r in requests]
    assert len(requests) > 1 and max(sizes) <= ga4_mp.MAX_BODY_BYTES
    assert [pk for r in requests for pk in r.event_pks] == [e.pk for e in events]


def test_an_event_too_large_alone_is_skipped_with_the_reason() -> None:
    huge = lead(properties={"items": [{"item_id": "x" * 1000, "n": i} for i in range(200)]})
    reason = factories.ga4().skip(huge, WHEN)
    assert reason is not None and "GA4 drops bodies over 130 kB" in reason


def test_pii_looking_properties_are_not_sent() -> None:
    event = lead(properties={"email": "a@b.com", "nested": {"x": 1}, "google_x": 1, "ok": True})
    params = factories.ga4().build([event])[0].json["events"][0]["params"]
    assert "email" not in params and "nested" not in params and "google_x" not in params
    assert params["ok"] is True


@pytest.mark.parametrize("cookie", ["GA1.1.1234567890.1767225600", "1234567890.1767225600"])
def test_client_id_comes_from_the_ga_cookie(cookie: str) -> None:
    body = factories.ga4().build([lead(context={"ga": cookie})])[0].json
    assert body["client_id"] == "1234567890.1767225600"


def test_client_id_is_derived_stably_from_the_visitor_without_a_ga_cookie() -> None:
    ads = factories.ga4()
    first = ads.build([lead(context={})])[0].json["client_id"]
    again = ads.build([lead(context={})])[0].json["client_id"]
    other = ads.build([lead(context={}, visitor_id="v-2")])[0].json["client_id"]
    assert first == again != other
    assert re.fullmatch(r"\d+\.\d+", first)
    assert "v-1" not in first


@pytest.mark.parametrize(
    "user_id", ["a@b.com", "+1 617 555 0100", "6175550100", "f" * 64, "x" * 257, None]
)
def test_user_id_is_sent_only_when_it_carries_no_pii(user_id: str | None) -> None:
    body = factories.ga4().build([lead(user_id=user_id)])[0].json
    assert "user_id" not in body


def test_user_id_can_be_turned_off() -> None:
    assert "user_id" not in factories.ga4(send_user_id=False).build([lead()])[0].json


def test_requests_group_by_client_id_with_at_most_25_events() -> None:
    same = [lead(f"a{i}") for i in range(30)]
    other = [lead("b0", context={"ga": "GA1.2.999.111"})]
    requests = factories.ga4().build([*same, *other])
    assert [len(r.event_pks) for r in requests] == [25, 5, 1]
    assert [r.json["client_id"] for r in requests] == ["1234567890.1767225600"] * 2 + ["999.111"]
    assert all(len(r.json["events"]) <= 25 for r in requests)


def test_validate_mode_uses_the_debug_endpoint() -> None:
    ga4 = factories.ga4(validate=True, validation_behavior="ENFORCE_RECOMMENDATIONS")
    [request] = ga4.build([lead()])
    assert request.url.startswith("https://www.google-analytics.com/debug/mp/collect?")
    assert request.json["validation_behavior"] == "ENFORCE_RECOMMENDATIONS"


def test_skip_names_the_72_hour_window() -> None:
    ads = factories.ga4()
    reason = ads.skip(lead(), WHEN + timedelta(days=4))
    assert reason == "event is 96.0 hours old; GA4 accepts events up to 72 hours old"
    assert ads.skip(lead(), WHEN + timedelta(hours=71)) is None


def test_skip_honours_analytics_storage_and_needs_an_id() -> None:
    ads = factories.ga4()
    denied = lead(consent={"analytics_storage": "denied"})
    assert ads.skip(denied, WHEN) == "analytics_storage consent denied"
    assert factories.ga4(respect_analytics_storage=False).skip(denied, WHEN) is None
    anonymous = lead(context={}, visitor_id=None, user_id=None)
    assert "client_id" in (ads.skip(anonymous, WHEN) or "")


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ({}, "empty events mapping"),
        ({"Lead": "_lead"}, "not a GA4 event name"),
        ({"Lead": "session_start"}, "reserved"),
        ({"Lead": "firebase_lead"}, "reserved"),
        ({"Lead": "x" * 41}, "not a GA4 event name"),
    ],
)
def test_settings_refuse_names_ga4_would_drop(events: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        factories.ga4(events=events)


def test_example_settings_validate() -> None:
    assert registry.parse(dict(ga4_mp.GA4MeasurementProtocol.example_settings), 0)


# ---------------------------------------------------------------- through the fake, over HTTP


@pytest.fixture
def fake() -> Iterator[ga4.FakeGA4]:
    with ga4.FakeGA4() as server:
        assert isinstance(server, ga4.FakeGA4)
        yield server


def deliver(ads: ga4_mp.GA4MeasurementProtocol, events: Sequence[Event]) -> dict[str, base.Outcome]:
    outcomes: dict[str, base.Outcome] = {}
    for request in ads.build(events):
        outcomes.update(ads.interpret(request, send(request)))
    return outcomes


def test_collect_accepts_events(fake: ga4.FakeGA4) -> None:
    now = datetime.now(UTC)
    events = [lead(f"e{i}", occurred_at=now) for i in range(3)]
    outcomes = deliver(factories.ga4(api_base=fake.url), events)
    assert all(o == base.Delivered() for o in outcomes.values())
    assert [a["event"]["name"] for a in fake.accepted] == ["generate_lead"] * 3
    assert fake.accepted[0]["client_id"] == "1234567890.1767225600"
    assert fake.messages == []


@pytest.mark.parametrize(
    ("reply", "after"),
    [(Reply(503), None), (Reply(500), None), (Reply(429, headers={"Retry-After": "7"}), 7.0)],
)
def test_server_errors_and_throttling_are_retried(
    fake: ga4.FakeGA4, reply: Reply, after: float | None
) -> None:
    fake.script(reply)
    outcome = deliver(factories.ga4(api_base=fake.url), [lead()])["ev-1"]
    assert isinstance(outcome, base.Retry) and outcome.after == after


def test_a_wrong_base_url_is_rejected(fake: ga4.FakeGA4) -> None:
    outcome = deliver(factories.ga4(api_base=fake.url + "/nope"), [lead()])["ev-1"]
    assert isinstance(outcome, base.Rejected) and "HTTP 404" in outcome.reason


def test_validate_mode_records_validation_messages(fake: ga4.FakeGA4) -> None:
    now = datetime.now(UTC)
    stale = lead("old", occurred_at=now - timedelta(hours=73))
    fresh = lead("new", occurred_at=now)
    enforce = "ENFORCE_RECOMMENDATIONS"
    ads = factories.ga4(api_base=fake.url, validate=True, validation_behavior=enforce)
    outcomes = deliver(ads, [stale, fresh])
    assert outcomes["new"] == base.Delivered(
        "valid per /debug/mp/collect (validate mode: not recorded)", test=True
    )
    assert isinstance(outcomes["old"], base.Rejected)
    assert outcomes["old"].reason.startswith("VALUE_OUT_OF_BOUNDS at events[0].timestamp_micros")
    assert fake.accepted == []


def test_validate_mode_reads_googles_own_messages(fake: ga4.FakeGA4) -> None:
    message = {
        "fieldPath": "events",
        "description": "Event at index: [1] has invalid name [_lead]. "
        "Names must start with an alphabetic character.",
        "validationCode": "NAME_INVALID",
    }
    fake.script(Reply(200, {"validationMessages": [message]}))
    outcomes = deliver(factories.ga4(api_base=fake.url, validate=True), [lead("a"), lead("b")])
    assert isinstance(outcomes["a"], base.Delivered)
    assert outcomes["b"] == base.Rejected(
        "NAME_INVALID at events: Event at index: [1] has invalid name [_lead]. "
        "Names must start with an alphabetic character."
    )


def session_now(now: datetime) -> dict[str, str]:
    return {"ga": "GA1.1.1234567890.1767225600", "ga_session": f"ABC123XYZ:{int(now.timestamp())}"}


def test_events_in_a_session_are_assigned_with_their_user_id(fake: ga4.FakeGA4) -> None:
    now = datetime.now(UTC)
    in_session = lead("in", occurred_at=now, context=session_now(now))
    server_session = lead("srv", occurred_at=now, context={"session_id": str(int(now.timestamp()))})
    deliver(factories.ga4(api_base=fake.url), [in_session, server_session])
    assert [a["assigned"] for a in fake.accepted] == [True, True]
    assert fake.accepted[0]["user_id"] == "u_8f3a2c"
    assert fake.accepted[0]["user_data"] == {
        "sha256_email_address": ["a" * 64],
        "sha256_phone_number": ["b" * 64],
    }


def test_the_fake_counts_a_sessionless_or_stale_session_event_as_unassigned(
    fake: ga4.FakeGA4,
) -> None:
    now = datetime.now(UTC)
    stale = {"ga_session": f"ABC123XYZ:{int(now.timestamp()) - 25 * 3600}"}
    events = [
        lead("none", occurred_at=now, context={}),
        lead("old", occurred_at=now, context=stale),
    ]
    deliver(factories.ga4(api_base=fake.url), events)
    assert [(a["assigned"], a["user_id"]) for a in fake.accepted] == [(False, None)] * 2
    assert len(fake.unassigned) == 2


def test_a_large_batch_reaches_ga4_whole_in_bodies_under_130_kb(fake: ga4.FakeGA4) -> None:
    now = datetime.now(UTC)
    big = {f"p{i}": "x" * 100 for i in range(20)}
    events = [
        lead(f"e{i}", occurred_at=now, properties={**big, "items": [big] * 3}) for i in range(25)
    ]
    outcomes = deliver(factories.ga4(api_base=fake.url), events)
    assert all(o == base.Delivered() for o in outcomes.values())
    assert len(fake.requests) > 1 and fake.dropped == 0
    assert len(fake.accepted) == 25


def test_the_fake_drops_a_body_of_130_kb_or_more_as_ga4_does(fake: ga4.FakeGA4) -> None:
    body = {"client_id": "1.2", "events": [{"name": "x", "params": {"p": "y" * 131_000}}]}
    request = base.OutgoingRequest(
        "POST", f"{fake.url}/mp/collect?measurement_id=G-ABC123XYZ&api_secret=s3cr3t", (), json=body
    )
    assert send(request).status == 204
    assert fake.dropped == 1 and fake.accepted == []
    debug = base.OutgoingRequest("POST", f"{fake.url}/debug/mp/collect", (), json=body)
    [message] = send(debug).json()["validationMessages"]
    assert message["validationCode"] == "VALUE_OUT_OF_BOUNDS"


@pytest.mark.parametrize(
    "user_data",
    [
        {"sha256_email_address": "a" * 64},
        {"sha256_email_address": ["jane@example.com"]},
        {"email": ["a" * 64]},
        {"address": [{"first_name": "jane"}]},
    ],
)
def test_the_fake_refuses_user_data_ga4_would_not_take(
    fake: ga4.FakeGA4, user_data: dict[str, Any]
) -> None:
    body = {"client_id": "1.2", "user_data": user_data, "events": [{"name": "purchase"}]}
    debug = base.OutgoingRequest("POST", f"{fake.url}/debug/mp/collect", (), json=body)
    [message] = send(debug).json()["validationMessages"]
    assert (
        message["fieldPath"].startswith("user_data")
        and message["validationCode"] == "VALUE_INVALID"
    )


def test_the_default_names_pass_the_debug_endpoint(fake: ga4.FakeGA4) -> None:
    now = datetime.now(UTC)
    names = sorted(platforms.DEFAULT_EVENTS["ga4_mp"])
    events = [lead(f"e{i}", name=n, occurred_at=now) for i, n in enumerate(names)]
    ads = factories.ga4(api_base=fake.url, validate=True, events=None)
    outcomes = deliver(ads, [e for e in events if ads.wants(e.type, e.name)])
    assert len(outcomes) == len(names)
    assert all(isinstance(o, base.Delivered) and o.test for o in outcomes.values())
    assert ads.test_mode == "validate (GA4 debug endpoint)"
    assert factories.ga4().test_mode is None


def test_the_fake_counts_nothing_of_a_request_with_more_than_25_events(fake: ga4.FakeGA4) -> None:
    events = [{"name": "purchase", "params": {"engagement_time_msec": 1}}] * 26
    body = {"client_id": "1.2", "events": events}
    query = "measurement_id=G-ABC123XYZ&api_secret=s3cr3t"
    collect = base.OutgoingRequest("POST", f"{fake.url}/mp/collect?{query}", (), json=body)
    assert send(collect).status == 204 and fake.accepted == []
    debug = base.OutgoingRequest("POST", f"{fake.url}/debug/mp/collect?{query}", (), json=body)
    [message] = send(debug).json()["validationMessages"]
    assert message["validationCode"] == "EXCEEDED_MAX_ENTITIES"
