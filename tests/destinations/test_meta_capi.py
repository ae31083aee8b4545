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


# Meta's Parameter Builder appends a fifth base64url segment (facebook/capi-param-builder).
FBC_BUILDER = f"{FBC}.AQIDAQEC"
FBP_BUILDER = "fb.1.1767000000000.1116446470.Ag"


def sent_user_data(event: Event, **settings: Any) -> dict[str, Any]:
    [request] = factories.meta(**settings).build([event])
    user_data: dict[str, Any] = request.json["data"][0]["user_data"]
    return user_data


def test_a_newer_fbclid_seen_by_the_server_beats_an_older_fbc_cookie() -> None:
    seen = datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC)  # after the cookie's 1767225000000 ms
    clicks = (ClickId("fbclid", "NewerClick_Xy", seen),)
    user_data = sent_user_data(lead(click_ids=clicks))
    assert user_data["fbc"] == "fb.1.1767225605000.NewerClick_Xy"


def test_an_fbc_cookie_newer_than_the_servers_fbclid_wins() -> None:
    clicks = (ClickId("fbclid", "OlderClick", datetime(2025, 12, 31, tzinfo=UTC)),)
    assert sent_user_data(lead(click_ids=clicks))["fbc"] == FBC


def test_the_same_click_keeps_the_cookie_byte_exact_appendix_included() -> None:
    clicks = (ClickId("fbclid", FBCLID, AT + timedelta(minutes=1)),)
    context = {"user_agent": UA, "fbc": FBC_BUILDER, "fbp": FBP_BUILDER}
    user_data = sent_user_data(lead(context=context, click_ids=clicks))
    assert (user_data["fbc"], user_data["fbp"]) == (FBC_BUILDER, FBP_BUILDER)


@pytest.mark.parametrize(
    "bad",
    [
        "fb.1.1767225000.IwAR",  # seconds, not milliseconds
        "fb.1.1767225000000",  # no value
        f"{FBC}.toolongappendix",  # neither a 2- nor an 8-character appendix
        "IwAR2F4-dbP0l7Mn1IawQQ",  # a bare fbclid
    ],
)
def test_an_unreadable_fbc_or_fbp_is_dropped_not_sent_to_be_refused(bad: str) -> None:
    user_data = sent_user_data(lead(context={"user_agent": UA, "fbc": bad, "fbp": bad}))
    assert "fbc" not in user_data and "fbp" not in user_data
    clicks = (ClickId("fbclid", FBCLID, AT),)
    rebuilt = sent_user_data(lead(context={"user_agent": UA, "fbc": bad}, click_ids=clicks))
    assert rebuilt["fbc"] == f"fb.1.1767225600000.{FBCLID}"


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


def test_a_relayed_ldu_event_with_parameter_builder_values_is_built_exactly() -> None:
    fbc, fbp = f"{FBC}.AQIDAQEC", f"{FBP}.Ag"
    event = lead(
        source_kind="server",
        properties={
            "currency": "USD",
            "value": 0,
            "data_processing_options": ["LDU"],
            "data_processing_options_country": 1,
            "data_processing_options_state": 1000,
        },
        context={"ip": "203.0.113.10", "user_agent": UA, "fbc": fbc, "fbp": fbp},
        click_ids=(ClickId("fbclid", FBCLID, AT),),  # the cookie's own click, seen later
    )
    [request] = factories.meta().build([event])
    assert request.json["data"] == [
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
                "fbc": fbc,
                "fbp": fbp,
            },
            "custom_data": {"currency": "USD", "value": 0},
            "data_processing_options": ["LDU"],
            "data_processing_options_country": 1,
            "data_processing_options_state": 1000,
        }
    ]


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
    event = lead(source_kind="server", url=None)  # a store sale: no page
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


# ---------------------------------------------------------------- action_source


def test_a_server_relayed_browser_event_with_url_and_user_agent_is_a_website_event() -> None:
    relayed = lead(source_kind="server")
    [sent] = factories.meta(server_action_source="physical_store").build([relayed])[0].json["data"]
    assert sent["action_source"] == "website"
    assert sent["event_source_url"] == "https://www.example.com/contact"


@pytest.mark.parametrize(
    "changes",
    [
        {"context": {"ip": "203.0.113.10"}},  # no user agent
        {"url": None},  # no page URL
        {"url": "android-app://com.example/contact"},  # not a web page
    ],
)
def test_other_server_events_keep_the_configured_action_source(changes: dict[str, Any]) -> None:
    event = lead(source_kind="server", **changes)
    [sent] = factories.meta(server_action_source="physical_store").build([event])[0].json["data"]
    assert sent["action_source"] == "physical_store"
    assert sent.get("event_source_url") in (None, "https://www.example.com/contact")


# ---------------------------------------------------------------- Limited Data Use

LDU_CA = {
    "data_processing_options": ["LDU"],
    "data_processing_options_country": 1,
    "data_processing_options_state": 1000,
}
LDU_GEO = {
    "data_processing_options": ["LDU"],
    "data_processing_options_country": 0,
    "data_processing_options_state": 0,
}


def sent_event(event: Event, **settings: Any) -> dict[str, Any]:
    [request] = factories.meta(**settings).build([event])
    sent: dict[str, Any] = request.json["data"][0]
    return sent


def test_no_data_processing_options_unless_asked() -> None:
    assert not set(sent_event(lead())) & set(LDU_CA)


def test_the_destination_setting_sends_ldu_on_every_event() -> None:
    sent = sent_event(lead(), data_processing_options=["LDU"])
    assert {k: sent[k] for k in LDU_GEO} == LDU_GEO
    settings = {
        "data_processing_options": ["LDU"],
        "data_processing_options_country": 1,
        "data_processing_options_state": 1000,
    }
    sent = sent_event(lead(), **settings)
    assert {k: sent[k] for k in LDU_CA} == LDU_CA


def test_an_events_own_options_win_and_never_reach_custom_data() -> None:
    event = lead(properties={"currency": "USD", "value": 0} | LDU_CA)
    sent = sent_event(event)
    assert {k: sent[k] for k in LDU_CA} == LDU_CA
    assert sent["custom_data"] == {"currency": "USD", "value": 0}
    opted_out = sent_event(
        lead(properties={"data_processing_options": []}), **{"data_processing_options": ["LDU"]}
    )
    assert opted_out["data_processing_options"] == []
    assert "data_processing_options_country" not in opted_out


def test_an_unreadable_ldu_place_lets_meta_geolocate() -> None:
    props = {"data_processing_options": ["LDU"], "data_processing_options_country": "US"}
    sent = sent_event(lead(properties=props))
    assert {k: sent[k] for k in LDU_GEO} == LDU_GEO


def test_ldu_settings_are_validated_at_start() -> None:
    with pytest.raises(ValueError):
        factories.meta(data_processing_options=["CCPA"])
    with pytest.raises(ValueError):
        factories.meta(data_processing_options_country=2)


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
    two_days_ago = datetime.now(UTC) - timedelta(days=2)
    cookie = {"user_agent": UA, "fbc": f"fb.1.{int(two_days_ago.timestamp() * 1000)}.{FBCLID}"}
    clicks = (ClickId("fbclid", FBCLID, two_days_ago),)
    events = [
        lead.fresh("a", context=cookie),
        lead.fresh("b", context={"user_agent": UA}, click_ids=clicks),
    ]

    outcomes = exchange(meta, events)

    assert set(outcomes) == {"a", "b"}
    assert all(isinstance(o, base.Delivered) and o.test for o in outcomes.values())
    assert [e["user_data"]["fbc"].split(".")[-1] for e in fake.events] == [FBCLID, FBCLID]
    assert fake.test_event_codes == ["TEST12345"]


def test_without_a_test_event_code_a_send_is_delivered_for_real(fake: fake_meta.FakeMeta) -> None:
    outcomes = exchange(factories.meta(api_base=fake.api_base), [lead.fresh("a")])
    assert outcomes == {"a": base.Delivered(outcomes["a"].detail)}  # type: ignore[union-attr]
    assert fake.test_event_codes == [None]


def test_a_bad_token_is_rejected_with_metas_message(fake: fake_meta.FakeMeta) -> None:
    meta = factories.meta(api_base=fake.api_base, access_token="EAAB-revoked")

    outcomes = exchange(meta, [lead.fresh("a"), lead.fresh("b")])

    for outcome in outcomes.values():
        assert isinstance(outcome, base.Rejected)
        assert outcome.reason.startswith("Invalid OAuth access token - Cannot parse access token")
        assert "code 190" in outcome.reason
    assert fake.events == []


def test_the_same_refusal_reads_the_same_whatever_the_request(fake: fake_meta.FakeMeta) -> None:
    """Meta gives each request its own fbtrace_id: kept in the request log, not in the reason
    (the failures page groups failed deliveries by it)."""
    meta = factories.meta(api_base=fake.api_base, access_token="EAAB-revoked")
    first, second = (exchange(meta, [lead.fresh(n)])[n] for n in ("a", "b"))
    assert isinstance(first, base.Rejected) and first == second
    assert "fbtrace_id" not in first.reason


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


# ---------------------------------------------------------------- the corners, against the fake


def raw_send(fake: fake_meta.FakeMeta, events: list[dict[str, Any]]) -> base.Response:
    """Events as given (not built by the adapter), to see what the fake itself refuses."""
    body = {"data": events, "access_token": fake_meta.ACCESS_TOKEN}
    request = base.OutgoingRequest(
        method="POST",
        url=f"{fake.api_base}/{fake_meta.PIXEL_ID}/events",
        event_pks=tuple(str(i) for i in range(len(events))),
        headers={"Content-Type": "application/json"},
        json=body,
    )
    return send(request)


def built(event: Event, **settings: Any) -> dict[str, Any]:
    return sent_event(event, **settings)


def test_the_fake_takes_parameter_builder_values_byte_exact(fake: fake_meta.FakeMeta) -> None:
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    fbc, fbp = f"fb.1.{now_ms}.{FBCLID}.AQIDAQEC", f"fb.2.{now_ms}.75452712527328085.Ag"
    meta = factories.meta(api_base=fake.api_base)
    outcomes = exchange(meta, [lead.fresh("a", context={"user_agent": UA, "fbc": fbc, "fbp": fbp})])
    assert isinstance(outcomes["a"], base.Delivered)
    [got] = fake.events
    assert (got["user_data"]["fbc"], got["user_data"]["fbp"]) == (fbc, fbp)


@pytest.mark.parametrize(
    "value", ["fb.1.1767225000.IwAR", "IwAR-bare", f"{FBC}.toolongappendix", f"{FBC}.A.B"]
)
def test_the_fake_refuses_an_fbc_meta_would_refuse_naming_the_event(
    fake: fake_meta.FakeMeta, value: str
) -> None:
    good = built(lead.fresh("a"))
    bad = built(lead.fresh("b")) | {"user_data": good["user_data"] | {"fbc": value}}
    answer = raw_send(fake, [good, good, bad])
    assert answer.status == 400
    assert "$['data'][2]" in answer.json()["error"]["error_user_msg"]
    assert fake.events == []


@pytest.mark.parametrize(
    "options",
    [
        {"data_processing_options": "LDU"},
        {"data_processing_options": ["CCPA"]},
        {"data_processing_options": ["LDU"], "data_processing_options_country": 2},
        {"data_processing_options": ["LDU"], "data_processing_options_country": "1"},
        {"data_processing_options_country": 1, "data_processing_options_state": 1000},
    ],
)
def test_the_fake_refuses_ldu_of_a_bad_shape(
    fake: fake_meta.FakeMeta, options: dict[str, Any]
) -> None:
    answer = raw_send(fake, [built(lead.fresh("a")) | options])
    assert answer.status == 400 and answer.json()["error"]["code"] == 100
    assert "$['data'][0]" in answer.json()["error"]["error_user_msg"]


def test_the_fake_takes_ldu_as_the_adapter_sends_it(fake: fake_meta.FakeMeta) -> None:
    settings = {"api_base": fake.api_base, "data_processing_options": ["LDU"]}
    events = [lead.fresh("a"), lead.fresh("b", properties=LDU_CA)]
    outcomes = exchange(factories.meta(**settings), events)
    assert all(isinstance(o, base.Delivered) for o in outcomes.values())
    assert [{k: e[k] for k in LDU_GEO} for e in fake.events] == [LDU_GEO, LDU_CA]


@pytest.mark.parametrize("where", ["error_user_msg", "message", "error_data"])
def test_the_culprit_is_read_in_graphs_own_path_syntax(where: str) -> None:
    meta = factories.meta()
    [request] = meta.build([lead("a"), lead("b"), lead("c")])
    error: dict[str, Any] = {"message": "Invalid parameter", "code": 100, "type": "OAuthException"}
    error[where] = "Invalid parameter $['data'][2]['custom_data']['value']: must be a number"
    if where == "error_data":
        error[where] = json.dumps({"blame_field_specs": [error[where]]})
    outcomes = meta.interpret(
        request, base.Response(400, {}, json.dumps({"error": error}).encode())
    )
    assert isinstance(outcomes["c"], base.Rejected)
    again = base.Retry("batch refused because of event c; sent again without it", after=0)
    assert outcomes["a"] == outcomes["b"] == again


def test_one_bad_event_fails_alone_and_the_rest_go_again_as_one_batch(
    fake: fake_meta.FakeMeta,
) -> None:
    meta = factories.meta(api_base=fake.api_base)
    bad = lead.fresh("bad", properties={"contents": [{"id": "sku-1"}]})  # no quantity
    events = [lead.fresh("a"), lead.fresh("b"), bad, lead.fresh("d")]

    outcomes = exchange(meta, events)

    refused = outcomes["bad"]
    assert isinstance(refused, base.Rejected) and "$['data'][2]" in refused.reason
    rest = [outcomes[pk] for pk in ("a", "b", "d")]
    assert all(isinstance(o, base.Retry) and not o.alone and o.after == 0 for o in rest)
    again = exchange(meta, [e for e in events if e.pk != "bad"])
    assert all(isinstance(o, base.Delivered) for o in again.values())
    assert len(fake.requests) == 2 and len(fake.events) == 3
