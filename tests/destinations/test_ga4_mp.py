"""ga4_mp: exact request bodies, grouping by client_id, and outcomes from the fake GA4 over HTTP."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

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
    user={"em": "a" * 64},
    context={"ga": "GA1.1.1234567890.1767225600", "ip": "203.0.113.7"},
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
        "consent": {"ad_user_data": "GRANTED", "ad_personalization": "DENIED"},
        "events": [
            {
                "name": "generate_lead",
                "timestamp_micros": 1767225600250000,
                "params": {
                    "value": 0,
                    "currency": "USD",
                    "page_location": "https://www.example.com/contact",
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
            "engagement_time_msec": 1,
            "transaction_id": "T-1",
            "items": items,
            "note": "x" * 100,
        },
    }
    assert body["events"][1]["name"] == "page_view"


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
        (None, "needs an events mapping"),
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
        "valid per /debug/mp/collect (validate mode: not recorded)"
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
