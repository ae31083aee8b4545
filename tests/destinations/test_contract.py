"""The contract every registered destination adapter keeps, checked over all of them alike.

Each adapter runs with the settings of its `example_settings` class attribute (a minimal valid
`[[destinations]]` entry, which also documents the type); adapters without one take theirs from
`factories.FORWARDERS`. Either way the entry must map the track event "Lead" and accept
`fresh_lead()`. Adapters that forward the whole event to the operator's own systems
(`factories.FORWARDS_EVERYTHING`) are exempt from the ad-consent case.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import BaseModel, SecretStr

from firstparty.destinations import base, registry
from firstparty.event import Event
from tests import factories

TOKEN = "contract-access-token-0123456789"
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)

KINDS = sorted(registry.ADAPTERS)


# A browser Lead from a minute ago with everything a platform could want.
fresh_lead = factories.rich_lead(NOW - timedelta(minutes=1))


def build(adapter: base.Adapter, events: list[Event]) -> list[base.OutgoingRequest]:
    token = TOKEN if adapter.needs_token else None
    return adapter.build(events, token)


def secret_values(model: BaseModel) -> Iterator[str]:
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, SecretStr):
            yield value.get_secret_value()
        elif isinstance(value, BaseModel):
            yield from secret_values(value)


def recorded(request: base.OutgoingRequest) -> str:
    """The request as the worker would record it, with its own secrets masked."""
    text = " ".join(
        [
            request.url,
            json.dumps(dict(request.headers)),
            json.dumps(request.json),
            (request.body or b"").decode("utf-8", "replace"),
        ]
    )
    for secret in request.secrets:
        text = text.replace(secret, "***")
    return text


kinds = pytest.mark.parametrize("kind", KINDS)


@kinds
def test_the_example_settings_validate_and_unknown_keys_are_refused(kind: str) -> None:
    assert registry.parse(factories.example_entry(kind), 0).type == kind
    with pytest.raises(ValueError, match="no_such_key: unknown key"):
        registry.parse(factories.example_entry(kind) | {"no_such_key": 1}, 0)


@kinds
def test_a_fresh_lead_is_wanted_and_not_skipped(kind: str) -> None:
    adapter = factories.example_adapter(kind)
    assert adapter.wants("track", "Lead")
    assert adapter.skip(fresh_lead(), NOW) is None


@kinds
def test_unmapped_names_are_not_wanted(kind: str) -> None:
    adapter = factories.example_adapter(kind)
    if adapter.settings.events is not None:
        assert not adapter.wants("track", "NoSuchEventAnywhere")


@kinds
def test_events_past_the_platforms_age_window_are_skipped_with_a_reason(kind: str) -> None:
    adapter = factories.example_adapter(kind)
    if adapter.max_event_age is None:
        pytest.skip("no age window")
    old = NOW - adapter.max_event_age - timedelta(days=1)
    reason = adapter.skip(fresh_lead(occurred_at=old, received_at=old), NOW)
    assert isinstance(reason, str) and reason


@kinds
@pytest.mark.parametrize("count", [1, 3, "max"])
def test_requests_carry_every_event_once_within_max_batch(kind: str, count: int | str) -> None:
    adapter = factories.example_adapter(kind)
    n = adapter.batch_size if count == "max" else min(int(count), adapter.batch_size)
    events = [fresh_lead(f"ev-{i}") for i in range(n)]

    requests = build(adapter, events)

    carried = [pk for r in requests for pk in r.event_pks]
    assert sorted(carried) == sorted(e.pk for e in events)
    assert all(1 <= len(r.event_pks) <= adapter.max_batch for r in requests)


@kinds
def test_build_is_pure_and_its_json_encodes(kind: str) -> None:
    adapter = factories.example_adapter(kind)
    events = [fresh_lead("a"), fresh_lead("b")][: adapter.batch_size]
    first, second = build(adapter, events), build(adapter, events)
    assert first == second
    for request in first:
        json.dumps(request.json)


@kinds
def test_needs_token_declares_exactly_when_a_token_request_is_built(kind: str) -> None:
    # The worker asks `needs_token` and never calls the token builder to find out.
    adapter = factories.example_adapter(kind)
    assert adapter.needs_token == (adapter.token_request() is not None)


@kinds
def test_every_secret_that_is_sent_is_listed_for_redaction(kind: str) -> None:
    adapter = factories.example_adapter(kind)
    secrets = [*secret_values(adapter.settings)]
    token_request = adapter.token_request()
    requests = build(adapter, [fresh_lead()]) + ([token_request] if token_request else [])
    if token_request is not None:
        secrets.append(TOKEN)
    for request in requests:
        assert all(request.secrets), "an empty secret would mask nothing"
        text = recorded(request)
        for secret in secrets:
            assert secret not in text, f"{kind}: a secret is sent but not in `secrets`"


@kinds
@pytest.mark.parametrize(
    ("status", "body"),
    [(200, b""), (200, b"{}"), (200, b"[]"), (200, b"<html>proxy</html>"), (400, b"{}")],
)
def test_interpret_answers_for_every_event_whatever_comes_back(
    kind: str, status: int, body: bytes
) -> None:
    adapter = factories.example_adapter(kind)
    for request in build(adapter, [fresh_lead("a"), fresh_lead("b")][: adapter.batch_size]):
        outcomes = adapter.interpret(request, base.Response(status, {}, body))
        assert set(outcomes) == set(request.event_pks)
        assert all(isinstance(o, base.Outcome) for o in outcomes.values())


@kinds
@pytest.mark.parametrize(
    ("status", "headers", "after"),
    [(500, {}, None), (503, {"Retry-After": "7"}, 7.0), (429, {"Retry-After": "7"}, 7.0)],
)
def test_server_errors_and_rate_limits_are_retried_honouring_retry_after(
    kind: str, status: int, headers: Mapping[str, str], after: float | None
) -> None:
    adapter = factories.example_adapter(kind)
    for request in build(adapter, [fresh_lead("a"), fresh_lead("b")][: adapter.batch_size]):
        outcomes = adapter.interpret(request, base.Response(status, headers, b""))
        assert set(outcomes) == set(request.event_pks)
        for outcome in outcomes.values():
            assert isinstance(outcome, base.Retry)
            if after is not None:
                assert outcome.after == after


@pytest.mark.parametrize("kind", [k for k in KINDS if k not in factories.FORWARDS_EVERYTHING])
def test_denied_ad_user_data_sends_no_hashed_personal_data(kind: str) -> None:
    adapter = factories.example_adapter(kind)
    event = fresh_lead(consent={"ad_user_data": "denied"})
    if adapter.skip(event, NOW) is not None:
        return  # not sent at all
    for request in build(adapter, [event]):
        text = recorded(request)
        for key, digest in event.user.items():
            assert digest not in text, f"{kind}: sent the {key} hash despite ad_user_data denied"
