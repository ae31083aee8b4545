"""Meta CAPI adapter: golden request bodies, and the adapter against the fake over real HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest

from firstparty.destinations import base
from firstparty.destinations.meta_capi import MetaCapi
from firstparty.event import ClickId, Event
from firstparty.identity import pii
from tests import factories
from tests.fakes import meta as fake_meta
from tests.fakes.server import Reply, send

JOHN = "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"
PHONE_META = "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"
PHONE_E164 = "1e231c66011e7a2d867a9cfae267a6aff103cf4913640b6e71a99850fc0ffbc8"
UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0 Safari/537.36"
)
FBCLID = "IwAR2F4-dbP0l7Mn1IawQQGCINEz7PYXQvwjNwB_qa2ofrHyiLjcbCRxTDMgk"
FBC = f"fb.1.1767225000000.{FBCLID}"
FBP = "fb.1.1767000000000.1116446470"
AT = datetime(2026, 1, 1, tzinfo=UTC)  # 1767225600


# The spec's example Lead (section 1.12) as firstparty stores it.
lead = factories.example(
    event_id="lead-7f3c2a9e",
    occurred_at=AT,
    received_at=AT,
    url="https://www.example.com/contact",
    properties={"currency": "USD", "value": 0},
    user={"em": JOHN, "ph": PHONE_META, "ph_e164": PHONE_E164},
    context={"ip": "203.0.113.10", "user_agent": UA, "fbc": FBC, "fbp": FBP},
    consent={"ad_user_data": "granted"},
)


# ---------------------------------------------------------------- golden bodies


def test_the_spec_example_lead_is_built_exactly() -> None:
    [request] = factories.meta(test_event_code="TEST12345").build([lead()])

    assert request.method == "POST"
    assert request.url == f"https://graph.facebook.com/v25.0/{fake_meta.PIXEL_ID}/events"
    assert request.event_pks == ("ev-1",)
    assert request.json == {
        "data": [
            {
                "event_name": "Lead",
                "event_time": 1767225600,
                "event_id": "lead-7f3c2a9e",
                "action_source": "website",
                "event_source_url": "https://www.example.com/contact",
                "user_data": {
                    "em": [JOHN],
                    "ph": [PHONE_META],
                    "client_ip_address": "203.0.113.10",
                    "client_user_agent": UA,
                    "fbc": FBC,
                    "fbp": FBP,
                },
                "custom_data": {"currency": "USD", "value": 0},
            }
        ],
        "test_event_code": "TEST12345",
        "access_token": fake_meta.ACCESS_TOKEN,
    }
    assert request.secrets == (fake_meta.ACCESS_TOKEN,)
    assert fake_meta.ACCESS_TOKEN not in request.url


def test_a_server_event_uses_the_configured_action_source_and_every_field() -> None:
    event = lead(
        source_kind="server",
        name="Purchase",
        url=None,
        referrer="https://www.example.com/cart",
        properties={"value": 49.5, "currency": "EUR", "content_ids": [1, "b"], "order_id": 77},
        user={k: pii.sha256(k) for k in ("fn", "ln", "ct", "st", "zp", "country", "db", "ge")}
        | {"external_id": pii.sha256("crm-42")},
        context={},
    )
    [request] = factories.meta(server_action_source="physical_store").build([event])

    [sent] = request.json["data"]
    assert sent == {
        "event_name": "Purchase",
        "event_time": 1767225600,
        "event_id": "lead-7f3c2a9e",
        "action_source": "physical_store",
        "referrer_url": "https://www.example.com/cart",
        "user_data": {
            k: [pii.sha256(k)] for k in ("fn", "ln", "db", "ge", "ct", "st", "zp", "country")
        }
        | {"external_id": [pii.sha256("crm-42")]},
        "custom_data": {
            "value": 49.5,
            "currency": "EUR",
            "content_ids": ["1", "b"],
            "order_id": "77",
        },
    }
    assert "test_event_code" not in request.json


def test_fbc_is_built_from_the_first_seen_time_and_the_byte_exact_fbclid() -> None:
    first_seen = datetime(2026, 1, 1, 0, 0, 0, 123000, tzinfo=UTC)
    clicks = (
        ClickId("fbclid", "OlderClick", first_seen - timedelta(days=3)),
        ClickId("fbclid", FBCLID, first_seen),
        ClickId("gclid", "Cj0KCQ", first_seen + timedelta(days=1)),
    )
    event = lead(context={"user_agent": UA}, click_ids=clicks)

    [request] = factories.meta().build([event])

    assert request.json["data"][0]["user_data"]["fbc"] == f"fb.1.1767225600123.{FBCLID}"


def test_the_browsers_fbc_cookie_wins_over_a_click_id() -> None:
    clicks = (ClickId("fbclid", "SomethingElse", AT),)
    [request] = factories.meta().build([lead(click_ids=clicks)])
    assert request.json["data"][0]["user_data"]["fbc"] == FBC


def test_values_hashed_before_arrival_are_sent_unchanged() -> None:
    stored = pii.hash_user({"email": JOHN.upper(), "first_name": pii.sha256("mary")})
    [request] = factories.meta().build([lead(user=stored)])

    user_data = request.json["data"][0]["user_data"]
    assert user_data["em"] == [JOHN]
    assert user_data["fn"] == [pii.sha256("mary")]


def test_appsecret_proof_is_sent_and_kept_secret() -> None:
    [request] = factories.meta(app_secret="app-secret-1").build([lead()])
    proof = request.json["appsecret_proof"]
    assert len(proof) == 64
    assert set(request.secrets) == {fake_meta.ACCESS_TOKEN, "app-secret-1", proof}


def test_an_empty_test_event_code_is_no_test_event_code() -> None:
    [request] = factories.meta(test_event_code="").build([lead()])
    assert "test_event_code" not in request.json


# ---------------------------------------------------------------- consent and skipping


def test_denied_ad_user_data_skips_the_event_by_default() -> None:
    event = lead(consent={"ad_user_data": "denied"})
    reason = factories.meta().skip(event, AT)
    assert reason is not None and "ad_user_data" in reason


def test_denied_ad_user_data_never_sends_identifiers() -> None:
    clicks = (ClickId("fbclid", FBCLID, AT),)
    event = lead(consent={"ad_user_data": "denied"}, click_ids=clicks)
    meta = factories.meta(consent_denied="send_context_only")

    assert meta.skip(event, AT) is None
    [request] = meta.build([event])
    assert request.json["data"][0]["user_data"] == {
        "client_ip_address": "203.0.113.10",
        "client_user_agent": UA,
    }


def test_an_eight_day_old_event_is_skipped_naming_the_seven_day_window() -> None:
    reason = factories.meta().skip(lead(), AT + timedelta(days=8))
    assert reason == "event is 8.0 days old; Meta accepts website events up to 7 days old"
    assert factories.meta().skip(lead(), AT + timedelta(days=6)) is None


def test_physical_store_events_may_be_62_days_old() -> None:
    meta = factories.meta(server_action_source="physical_store")
    event = lead(source_kind="server")
    assert meta.skip(event, AT + timedelta(days=30)) is None
    assert "62 days" in (meta.skip(event, AT + timedelta(days=63)) or "")


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"name": "Purchase", "properties": {"currency": "USD"}}, "without value and currency"),
        ({"context": {"ip": "203.0.113.10"}}, "without a page URL and a user agent"),
        ({"url": None}, "without a page URL and a user agent"),
        ({"user": {"ge": pii.sha256("f")}, "context": {"user_agent": UA}}, "user identifier"),
    ],
)
def test_events_meta_would_refuse_are_skipped_so_they_do_not_sink_a_batch(
    changes: dict[str, Any], words: str
) -> None:
    assert words in (factories.meta().skip(lead(**changes), AT) or "")


def test_unmapped_names_are_not_wanted() -> None:
    assert factories.meta().wants("track", "Lead")
    assert not factories.meta().wants("track", "ButtonClicked")


# ---------------------------------------------------------------- against the fake


@pytest.fixture
def fake() -> Iterator[fake_meta.FakeMeta]:
    with fake_meta.FakeMeta() as server:
        yield server


def exchange(meta: MetaCapi, events: list[Event]) -> dict[str, base.Outcome]:
    [request] = meta.build(events)
    return meta.interpret(request, send(request))


def test_the_fake_accepts_a_batch_and_the_adapter_marks_it_delivered(
    fake: fake_meta.FakeMeta,
) -> None:
    meta = factories.meta(api_base=fake.api_base, test_event_code="TEST12345")
    clicks = (ClickId("fbclid", FBCLID, datetime.now(UTC) - timedelta(days=2)),)
    events = [lead.fresh("a"), lead.fresh("b", context={"user_agent": UA}, click_ids=clicks)]

    outcomes = exchange(meta, events)

    assert set(outcomes) == {"a", "b"}
    assert all(isinstance(o, base.Delivered) for o in outcomes.values())
    assert [e["user_data"]["fbc"].split(".")[-1] for e in fake.events] == [FBCLID, FBCLID]
    assert fake.test_event_codes == ["TEST12345"]


def test_a_bad_token_is_rejected_with_metas_message(fake: fake_meta.FakeMeta) -> None:
    meta = factories.meta(api_base=fake.api_base, access_token="EAAB-revoked")

    outcomes = exchange(meta, [lead.fresh("a"), lead.fresh("b")])

    for outcome in outcomes.values():
        assert isinstance(outcome, base.Rejected)
        assert outcome.reason.startswith("Invalid OAuth access token - Cannot parse access token")
        assert "code 190" in outcome.reason
    assert fake.events == []


def test_an_unknown_pixel_rejects_the_whole_batch_without_splitting(
    fake: fake_meta.FakeMeta,
) -> None:
    meta = factories.meta(api_base=fake.api_base, pixel_id="999")
    outcomes = exchange(meta, [lead.fresh("a"), lead.fresh("b")])
    assert all(isinstance(o, base.Rejected) and "100/33" in o.reason for o in outcomes.values())


@pytest.mark.parametrize(
    ("reply", "after"),
    [
        (Reply(503, b"<html>Service Unavailable</html>"), None),
        (Reply(429, b"", {"Retry-After": "30"}), 30.0),
        (fake_meta.FakeMeta().transient(), None),
        (fake_meta.FakeMeta().throttled(retry_after=120), 120.0),
    ],
)
def test_server_errors_and_throttling_are_retried(
    fake: fake_meta.FakeMeta, reply: Reply, after: float | None
) -> None:
    fake.script(reply)
    outcomes = exchange(factories.meta(api_base=fake.api_base), [lead.fresh("a"), lead.fresh("b")])
    assert [type(o) for o in outcomes.values()] == [base.Retry, base.Retry]
    assert all(isinstance(o, base.Retry) and o.after == after for o in outcomes.values())


def test_a_refused_batch_that_names_the_event_rejects_it_and_resends_the_rest() -> None:
    bad = lead.fresh("bad", name="Purchase", properties={"currency": "USD"})
    with fake_meta.FakeMeta(name_event_index=True) as fake:
        meta = factories.meta(api_base=fake.api_base)

        outcomes = exchange(meta, [lead.fresh("a"), bad, lead.fresh("c")])

        rejected = outcomes["bad"]
        assert isinstance(rejected, base.Rejected)
        assert "Missing Value for Purchase Event" in rejected.reason
        assert outcomes["a"] == outcomes["c"]
        assert isinstance(outcomes["a"], base.Retry) and outcomes["a"].after == 0
        assert not outcomes["a"].alone
        again = exchange(meta, [lead.fresh("a"), lead.fresh("c")])
        assert all(isinstance(o, base.Delivered) for o in again.values())


def test_a_refused_batch_that_names_no_event_is_resent_one_by_one(
    fake: fake_meta.FakeMeta,
) -> None:
    meta = factories.meta(api_base=fake.api_base)
    old = datetime.now(UTC) - timedelta(days=8)
    events = [lead.fresh("a"), lead.fresh("old", occurred_at=old), lead.fresh("c")]

    outcomes = exchange(meta, events)

    assert all(isinstance(o, base.Retry) and o.alone and o.after == 0 for o in outcomes.values())
    alone = {e.pk: exchange(meta, [e])[e.pk] for e in events}
    assert isinstance(alone["a"], base.Delivered) and isinstance(alone["c"], base.Delivered)
    assert isinstance(alone["old"], base.Rejected)
    assert "Event Timestamp Too Old" in alone["old"].reason
    assert "100/2804003" in alone["old"].reason


def test_a_response_without_a_graph_error_is_judged_by_its_status() -> None:
    request = factories.meta().build([lead()])[0]
    outcome = factories.meta().interpret(request, base.Response(404, {}, b"Not Found"))
    assert isinstance(outcome["ev-1"], base.Rejected)


def test_the_fake_also_takes_a_form_body_with_data_as_a_json_string(
    fake: fake_meta.FakeMeta,
) -> None:
    [built] = factories.meta().build([lead.fresh("a")])
    form = {"data": json.dumps(built.json["data"]), "access_token": fake_meta.ACCESS_TOKEN}
    request = base.OutgoingRequest(
        method="POST",
        url=f"{fake.api_base}/{fake_meta.PIXEL_ID}/events",
        event_pks=("a",),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        body=urlencode(form).encode(),
    )
    assert send(request).json()["events_received"] == 1
