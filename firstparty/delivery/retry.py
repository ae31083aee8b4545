"""When to try a delivery again, and when to give up.

Our policy: exponential backoff with jitter, ``base * 2**(attempt-1) * random(0.5, 1)`` capped at
``backoff_max_seconds``, bounded by BOTH an attempt count and a time window measured from the
first attempt. Defaults (``DeliverySettings``): 10 attempts within 4 hours (Segment's window;
more tries than RudderStack's 3), 30 s doubling to a 30 min cap, so the tries spread over about
1.5-2 hours: an ad platform's outage is usually short, and a missed conversion costs more than a
late one. A wait the platform asks for (``Retry-After``, Google's "retry after 6 hours" for
``TOO_RECENT_EVENT``, a daily quota's reset: ``Retry.after``) replaces the computed delay (it knows
its own limits) and may extend the window: that try is made even past it, the attempt count
still bounds it, and no asked wait is longer than ``MAX_REQUESTED_WAIT``. Each destination may
override the attempt count
and the window (``max_attempts``, ``retry_window_seconds`` in its config table).
When the budget runs out the work is marked ``failed`` with the last reason; ``replay`` resends it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from firstparty.destinations.base import DestinationSettings
from firstparty.settings import DeliverySettings

# The longest wait a platform may ask for: a daily quota resets within 24 h (Google: midnight
# Pacific), Google's TOO_RECENT_EVENT asks for 6 h; anything longer is treated as this.
MAX_REQUESTED_WAIT = timedelta(hours=25)


@dataclass(frozen=True)
class Policy:
    """The retry budget of one destination."""

    max_attempts: int
    window: timedelta
    base_seconds: float
    max_seconds: float


def policy_for(delivery: DeliverySettings, destination: DestinationSettings) -> Policy:
    """The global defaults with the destination's own overrides applied."""
    window = destination.retry_window_seconds or delivery.retry_window_seconds
    return Policy(
        max_attempts=destination.max_attempts or delivery.max_attempts,
        window=timedelta(seconds=window),
        base_seconds=delivery.backoff_base_seconds,
        max_seconds=delivery.backoff_max_seconds,
    )


def jitter() -> float:
    """A random factor in [0.5, 1]; draw one per batch so a batch retried stays together."""
    return random.uniform(0.5, 1.0)


def backoff(policy: Policy, attempt: int, draw: float | None = None) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based), with jitter."""
    draw = jitter() if draw is None else draw
    exponent = min(max(attempt - 1, 0), 30)  # 2**30 already exceeds any sane cap
    return min(policy.base_seconds * 2.0**exponent, policy.max_seconds) * draw


def next_attempt(
    policy: Policy,
    *,
    attempt: int,
    first_attempt_at: datetime,
    now: datetime,
    after: float | None = None,
    draw: float | None = None,
) -> datetime | None:
    """When to try again after failed attempt `attempt`, or None when the budget is spent.

    `after`: the wait the platform asked for; it may take the next try past the window.
    """
    if attempt >= policy.max_attempts:
        return None
    if after is not None:
        return now + min(timedelta(seconds=max(after, 0.0)), MAX_REQUESTED_WAIT)
    when = now + timedelta(seconds=backoff(policy, attempt, draw))
    if when > first_attempt_at + policy.window:
        return None
    return when


def give_up_reason(policy: Policy, *, attempt: int, reason: str) -> str:
    """The `last_error` of work whose retry budget is spent."""
    if attempt >= policy.max_attempts:
        return f"gave up after {attempt} attempts: {reason}"
    hours = policy.window.total_seconds() / 3600
    return f"gave up after {attempt} attempts (retry window {hours:g} h): {reason}"
