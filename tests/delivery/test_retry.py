"""The retry policy: backoff with jitter, capped, bounded by attempts and by a time window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from firstparty.delivery import retry
from firstparty.destinations import base
from firstparty.destinations.base import DestinationSettings
from firstparty.settings import DeliverySettings

POLICY = retry.Policy(max_attempts=8, window=timedelta(hours=4), base_seconds=2, max_seconds=900)
START = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


def test_backoff_doubles_with_jitter_and_caps() -> None:
    assert [retry.backoff(POLICY, n, draw=1.0) for n in (1, 2, 3, 4)] == [2, 4, 8, 16]
    assert retry.backoff(POLICY, 3, draw=0.5) == 4
    assert retry.backoff(POLICY, 20, draw=1.0) == 900
    assert all(1.0 <= retry.backoff(POLICY, 1) <= 2.0 for _ in range(100))


def test_attempts_bound_the_retries() -> None:
    assert retry.next_attempt(
        POLICY, attempt=7, first_attempt_at=START, now=START, draw=1
    ) == START + timedelta(seconds=128)
    assert retry.next_attempt(POLICY, attempt=8, first_attempt_at=START, now=START) is None
    assert "after 8 attempts" in retry.give_up_reason(POLICY, attempt=8, reason="HTTP 500")


def test_the_window_bounds_the_retries_and_retry_after_is_honoured() -> None:
    late = START + timedelta(hours=4, seconds=-1)
    assert retry.next_attempt(POLICY, attempt=2, first_attempt_at=START, now=late, draw=1) is None
    soon = retry.next_attempt(POLICY, attempt=2, first_attempt_at=START, now=START, after=120)
    assert soon == START + timedelta(seconds=120)
    assert "retry window 4 h" in retry.give_up_reason(POLICY, attempt=3, reason="HTTP 429")


def test_a_wait_the_platform_asks_for_may_extend_the_window() -> None:
    late = START + timedelta(hours=3, minutes=59)
    asked = retry.next_attempt(POLICY, attempt=2, first_attempt_at=START, now=late, after=90)
    assert asked == late + timedelta(seconds=90)
    six_hours = retry.next_attempt(
        POLICY, attempt=1, first_attempt_at=START, now=START, after=6 * 3600
    )
    assert six_hours == START + timedelta(hours=6)  # Google's TOO_RECENT_EVENT, past 4 h
    capped = retry.next_attempt(POLICY, attempt=1, first_attempt_at=START, now=START, after=9e9)
    assert capped == START + retry.MAX_REQUESTED_WAIT
    assert retry.next_attempt(POLICY, attempt=8, first_attempt_at=START, now=START, after=1) is None


def test_destinations_override_the_defaults() -> None:
    dest = DestinationSettings(name="x", type="fake", max_attempts=3, retry_window_seconds=600)
    policy = retry.policy_for(DeliverySettings(), dest)
    assert (policy.max_attempts, policy.window) == (3, timedelta(minutes=10))
    default = retry.policy_for(DeliverySettings(), DestinationSettings(name="y", type="fake"))
    assert (default.max_attempts, default.window) == (10, timedelta(hours=4))


def test_retry_after_takes_delta_seconds_and_http_dates() -> None:
    now = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
    assert base.retry_after({"Retry-After": "120"}, now) == 120.0
    date = {"retry-after": "Thu, 26 Nov 2026 09:05:30 GMT"}
    assert base.retry_after(date, now) == 330.0
    assert base.retry_after({"Retry-After": "Thu, 26 Nov 2026 08:00:00 GMT"}, now) == 0.0
    assert base.retry_after({"Retry-After": "soon"}, now) is None
    assert base.retry_after({}, now) is None
