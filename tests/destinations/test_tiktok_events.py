"""TikTok Events API adapter: golden request bodies, and the adapter against the fake over HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from firstparty.destinations import base
from firstparty.destinations.tiktok_events import TikTokEvents
from firstparty.event import ClickId, Event
from firstparty.identity import pii
from tests import factories
from tests.fakes import tiktok as fake_tiktok
from tests.fakes.server import Reply, send

JOHN = "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"
PHONE_META = "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"
PHONE_E164 = "1e231c66011e7a2d867a9cfae267a6aff103cf4913640b6e71a99850fc0ffbc8"
UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36"
TTCLID = "E.C.P.example-click-id"
TTP = "2F7h37YkS1j57AYSKTI7IHhJPYH"
AT = datetime(2026, 1, 1, tzinfo=UTC)  # 1767225600


# The spec's example Lead (section 2.11) as firstparty stores it.
lead = factories.example(
    event_id="lead-7f3c2a9e",
    occurred_at=AT,
    received_at=AT,
    url="https://www.example.com/contact",
    referrer="https://www.tiktok.com/",
    properties={"currency": "USD", "value": 0},
    user={"em": JOHN, "ph": PHONE_META, "ph_e164": PHONE_E164},
    context={"ip": "203.0.113.10", "user_agent": UA, "ttp": TTP},
    consent={"ad_user_data": "granted"},
    click_ids=(ClickId("ttclid", TTCLID, AT - timedelta(minutes=5)),),
)


# ---------------------------------------------------------------- golden bodies


def test_the_spec_example_lead_is_built_exactly() -> None:
    [request] = factories.tiktok(test_event_code="TEST12345").build([lead()])

    assert request.method == "POST"
    assert request.url == "https://business-api.tiktok.com/open_api/v1.3/event/track/"
    assert request.headers == {
        "Access-Token": fake_tiktok.ACCESS_TOKEN,
        "Content-Type": "application/json",
    }
    assert request.secrets == (fake_tiktok.ACCESS_TOKEN,)
    assert request.json == {
        "event_source": "web",
        "event_source_id": fake_tiktok.PIXEL_CODE,
        "test_event_code": "TEST12345",
        "data": [
            {
                "event": "Lead",
                "event_time": 1767225600,
                "event_id": "lead-7f3c2a9e",
                "user": {
                    "email": JOHN,
                    "phone": PHONE_E164,
                    "ttclid": TTCLID,
                    "ttp": TTP,
                    "ip": "203.0.113.10",
                    "user_agent": UA,
                },
                "page": {
                    "url": "https://www.example.com/contact",
                    "referrer": "https://www.tiktok.com/",
                },
                "properties": {"currency": "USD", "value": 0},
            }
        ],
    }


def test_names_external_id_and_ids_are_mapped() -> None:
    event = lead(
        type="page",
        name="page",
        user={"external_id": pii.sha256("crm-42"), "fn": pii.sha256("mary"), "zp": "a" * 64},
        properties={"contents": [{"content_id": 12, "quantity": 1}], "order_id": 9},
        click_ids=(),
        context={},
        referrer=None,
    )
    [sent] = factories.tiktok().build([event])[0].json["data"]
    assert sent["event"] == "Pageview"
    assert sent["user"] == {
        "external_id": pii.sha256("crm-42"),
        "first_name": pii.sha256("mary"),
        "zip_code": "a" * 64,
    }
    assert sent["page"] == {"url": "https://www.example.com/contact"}
    assert sent["properties"] == {
        "contents": [{"content_id": "12", "quantity": 1}],
        "order_id": "9",
    }


def test_the_most_recent_ttclid_is_sent_byte_exact() -> None:
    clicks = (
        ClickId("ttclid", "E.C.P.Older", AT - timedelta(days=2)),
        ClickId("ttclid", "E.C.P.NewerMixedCase", AT - timedelta(days=1)),
    )
    [sent] = factories.tiktok().build([lead(click_ids=clicks)])[0].json["data"]
    assert sent["user"]["ttclid"] == "E.C.P.NewerMixedCase"


def test_test_events_go_one_per_request_unless_batching_is_allowed() -> None:
    events = [lead("a"), lead("b")]
    alone = factories.tiktok(test_event_code="T1").build(events)
    assert [r.event_pks for r in alone] == [("a",), ("b",)]
    batched = factories.tiktok(test_event_code="T1", batch_test_events=True).build(events)
    assert [r.event_pks for r in batched] == [("a", "b")]
    assert [r.event_pks for r in factories.tiktok().build(events)] == [("a", "b")]


# ---------------------------------------------------------------- consent and skipping


def test_denied_ad_user_data_skips_the_event_by_default() -> None:
    reason = factories.tiktok().skip(lead(consent={"ad_user_data": "denied"}), AT)
    assert reason is not None and "ad_user_data" in reason


def test_denied_ad_user_data_never_sends_identifiers() -> None:
    tiktok = factories.tiktok(consent_denied="send_context_only")
    event = lead(consent={"ad_user_data": "denied"}, user={"em": JOHN, "external_id": JOHN})
    assert tiktok.skip(event, AT) is None
    [sent] = tiktok.build([event])[0].json["data"]
    assert sent["user"] == {"ip": "203.0.113.10", "user_agent": UA}


def test_the_age_window_is_configurable() -> None:
    reason = factories.tiktok().skip(lead(), AT + timedelta(days=29))
    assert reason is not None and "28 days" in reason
    assert factories.tiktok().skip(lead(), AT + timedelta(days=27)) is None
    assert factories.tiktok(max_event_age_days=None).skip(lead(), AT + timedelta(days=400)) is None


# ---------------------------------------------------------------- answer codes


@pytest.mark.parametrize(
    ("code", "overrides", "kind"),
    [
        (0, {}, base.Delivered),
        (20001, {}, base.Delivered),
        (20001, {"code_treatment": {"20001": "retry"}}, base.Retry),
        (40001, {}, base.Rejected),
        (40100, {}, base.Retry),
        (40104, {}, base.Rejected),
        (40199, {}, base.Rejected),
        (50002, {}, base.Retry),
        (61000, {}, base.Retry),
    ],
)
def test_answer_codes_are_classified(code: int, overrides: dict[str, Any], kind: type) -> None:
    tiktok = factories.tiktok(**overrides)
    request = tiktok.build([lead()])[0]
    body = f'{{"code": {code}, "message": "m", "request_id": "r"}}'.encode()
    [outcome] = tiktok.interpret(request, base.Response(200, {}, body)).values()
    assert isinstance(outcome, kind)


# ---------------------------------------------------------------- against the fake


@pytest.fixture
def fake() -> Iterator[fake_tiktok.FakeTikTok]:
    with fake_tiktok.FakeTikTok() as server:
        yield server


def exchange(tiktok: TikTokEvents, events: list[Event]) -> dict[str, base.Outcome]:
    outcomes: dict[str, base.Outcome] = {}
    for request in tiktok.build(events):
        outcomes |= tiktok.interpret(request, send(request))
    return outcomes


def test_the_fake_accepts_a_batch_and_the_adapter_marks_it_delivered(
    fake: fake_tiktok.FakeTikTok,
) -> None:
    tiktok = factories.tiktok(api_base=fake.api_base)

    outcomes = exchange(tiktok, [lead.fresh("a"), lead.fresh("b")])

    assert all(isinstance(o, base.Delivered) for o in outcomes.values())
    assert [e["user"]["phone"] for e in fake.events] == [PHONE_E164, PHONE_E164]
    assert [e["event_id"] for e in fake.events] == ["lead-7f3c2a9e", "lead-7f3c2a9e"]


def test_test_events_reach_a_fake_that_refuses_batched_test_events() -> None:
    with fake_tiktok.FakeTikTok(batch_test_events=False) as fake:
        tiktok = factories.tiktok(api_base=fake.api_base, test_event_code="TEST12345")
        outcomes = exchange(tiktok, [lead.fresh("a"), lead.fresh("b")])
        assert all(isinstance(o, base.Delivered) for o in outcomes.values())
        assert len(fake.requests) == 2


def test_a_bad_token_gets_401_and_is_rejected(fake: fake_tiktok.FakeTikTok) -> None:
    tiktok = factories.tiktok(api_base=fake.api_base, access_token="wrong")
    outcomes = exchange(tiktok, [lead.fresh("a")])
    assert outcomes == {"a": base.Rejected("TikTok refused the Access-Token (HTTP 401)")}


def test_a_pixel_without_permission_is_rejected_with_tiktoks_message(
    fake: fake_tiktok.FakeTikTok,
) -> None:
    tiktok = factories.tiktok(api_base=fake.api_base, pixel_code="COTHER")
    outcomes = exchange(tiktok, [lead.fresh("a")])
    [outcome] = outcomes.values()
    assert isinstance(outcome, base.Rejected)
    assert outcome.reason.startswith("No permission to operate pixel code: COTHER.")
    assert outcome.reason.endswith("(code 40001)")


def test_a_batch_refused_for_one_event_rejects_it_and_resends_the_rest(
    fake: fake_tiktok.FakeTikTok,
) -> None:
    tiktok = factories.tiktok(api_base=fake.api_base)
    bad = lead.fresh("bad", properties={"value": "forty", "currency": "USD"})

    outcomes = exchange(tiktok, [lead.fresh("a"), bad, lead.fresh("c")])

    assert outcomes["bad"] == base.Rejected(
        "data.1.properties.value: Not a valid number. (code 40002)"
    )
    assert isinstance(outcomes["a"], base.Retry) and outcomes["a"].after == 0
    assert isinstance(outcomes["c"], base.Retry) and not outcomes["c"].alone
    assert fake.events == []


@pytest.mark.parametrize(
    ("reply", "after"),
    [
        (Reply(500, b""), None),
        (Reply(429, b"", {"Retry-After": "12"}), 12.0),
        (Reply(200, {"code": 40100, "message": "Too many requests", "request_id": "r"}), None),
        (Reply(200, b"<html>gateway</html>"), None),
    ],
)
def test_server_errors_and_throttling_are_retried(
    fake: fake_tiktok.FakeTikTok, reply: Reply, after: float | None
) -> None:
    fake.script(reply)
    tiktok = factories.tiktok(api_base=fake.api_base)
    outcomes = exchange(tiktok, [lead.fresh("a"), lead.fresh("b")])
    assert all(isinstance(o, base.Retry) and o.after == after for o in outcomes.values())


# ---------------------------------------------------------------- what TikTok really did


def test_test_events_are_recorded_as_test(fake: fake_tiktok.FakeTikTok) -> None:
    tiktok = factories.tiktok(api_base=fake.api_base, test_event_code="TEST12345")
    outcomes = exchange(tiktok, [lead.fresh("a"), lead.fresh("b")])
    assert all(isinstance(o, base.Delivered) and o.test for o in outcomes.values())
    assert fake.test_event_codes == ["TEST12345", "TEST12345"]
    real = exchange(factories.tiktok(api_base=fake.api_base), [lead.fresh("c")])
    assert isinstance(real["c"], base.Delivered) and not real["c"].test


def test_an_invalid_price_on_one_event_fails_it_alone(fake: fake_tiktok.FakeTikTok) -> None:
    tiktok = factories.tiktok(api_base=fake.api_base)
    bad = lead.fresh("bad", properties={"contents": [{"content_id": "1", "price": "49.90"}]})
    events = [lead.fresh("a"), bad, lead.fresh("c")]

    outcomes = exchange(tiktok, events)

    # TikTok's 40000 names no event: each goes again alone, which finds it.
    assert all(isinstance(o, base.Retry) and o.alone for o in outcomes.values())
    alone = {e.pk: exchange(tiktok, [e])[e.pk] for e in events}
    assert alone["bad"] == base.Rejected("Invalid Price Field (code 40000)")
    assert isinstance(alone["a"], base.Delivered) and isinstance(alone["c"], base.Delivered)
    assert len(fake.events) == 2


@pytest.mark.parametrize("code", [40001, 40101, 40104, 40105])
def test_only_authentication_and_permission_codes_fail_the_whole_request(code: int) -> None:
    tiktok = factories.tiktok()
    request = tiktok.build([lead("a"), lead("b")])[0]
    body = json.dumps({"code": code, "message": "data.1.x: no", "request_id": "r"}).encode()
    outcomes = tiktok.interpret(request, base.Response(200, {}, body))
    assert all(isinstance(o, base.Rejected) for o in outcomes.values())


@pytest.mark.parametrize("code", [40000, 40002, 40199])
def test_other_codes_isolate_the_named_event(code: int) -> None:
    tiktok = factories.tiktok()
    request = tiktok.build([lead("a"), lead("b"), lead("c")])[0]
    message = "data.1.properties.value: Not a valid number."
    body = json.dumps({"code": code, "message": message, "request_id": "r"}).encode()
    outcomes = tiktok.interpret(request, base.Response(200, {}, body))
    assert outcomes["b"] == base.Rejected(f"{message} (code {code})")
    assert isinstance(outcomes["a"], base.Retry) and not outcomes["a"].alone


def test_an_operators_rejected_override_fails_the_whole_request() -> None:
    tiktok = factories.tiktok(code_treatment={"40000": "rejected"})
    request = tiktok.build([lead("a"), lead("b")])[0]
    body = b'{"code": 40000, "message": "Invalid Price Field", "request_id": "r"}'
    outcomes = tiktok.interpret(request, base.Response(200, {}, body))
    assert all(isinstance(o, base.Rejected) for o in outcomes.values())


def test_a_partial_success_is_read_per_event() -> None:
    with fake_tiktok.FakeTikTok(partial_success=True) as fake:
        tiktok = factories.tiktok(api_base=fake.api_base)
        bad = lead.fresh("bad", properties={"value": "forty", "currency": "USD"})
        outcomes = exchange(tiktok, [lead.fresh("a"), bad, lead.fresh("c")])

        assert isinstance(outcomes["a"], base.Delivered) and isinstance(
            outcomes["c"], base.Delivered
        )
        refused = outcomes["bad"]
        assert isinstance(refused, base.Rejected)
        assert "data.1.properties.value: Not a valid number." in refused.reason
        assert "(code 20001)" in refused.reason
        assert [e["event_id"] for e in fake.events] == ["lead-7f3c2a9e"] * 2


def test_a_partial_success_naming_no_event_sends_each_again_alone() -> None:
    tiktok = factories.tiktok()
    body = b'{"code": 20001, "message": "Partial success", "request_id": "r", "data": {}}'
    batch = tiktok.build([lead("a"), lead("b")])[0]
    outcomes = tiktok.interpret(batch, base.Response(200, {}, body))
    assert all(isinstance(o, base.Retry) and o.alone for o in outcomes.values())
    single = tiktok.build([lead("a")])[0]
    assert isinstance(tiktok.interpret(single, base.Response(200, {}, body))["a"], base.Delivered)


def test_limited_data_use_stated_on_the_event_reaches_tiktok(
    fake: fake_tiktok.FakeTikTok,
) -> None:
    ldu = {"data_processing_options": ["LDU"], "data_processing_options_country": 1}
    event = lead.fresh("a", properties={"value": 5, "currency": "USD"} | ldu)
    [sent] = factories.tiktok().build([event])[0].json["data"]
    assert sent["limited_data_use"] is True
    assert sent["properties"] == {"value": 5, "currency": "USD"}
    outcomes = exchange(factories.tiktok(api_base=fake.api_base), [event])
    assert isinstance(outcomes["a"], base.Delivered)
    assert fake.events[0]["limited_data_use"] is True


def test_each_failed_event_of_a_partial_success_gets_its_own_words() -> None:
    tiktok = factories.tiktok()
    request = tiktok.build([lead("a"), lead("b"), lead("c")])[0]
    message = "Partial success. data.0.event_time: too old; data.2.user.email: Must be hashed."
    body = json.dumps({"code": 20001, "message": message, "request_id": "r"}).encode()
    outcomes = tiktok.interpret(request, base.Response(200, {}, body))
    assert outcomes["a"] == base.Rejected("data.0.event_time: too old (code 20001)")
    assert outcomes["c"] == base.Rejected("data.2.user.email: Must be hashed. (code 20001)")
    assert isinstance(outcomes["b"], base.Delivered)
