"""What an outcome makes of a claim: the `Finish` the outbox records and the request log's `Link`.

A send's outcome follows the retry policy (`retry.py`); an accepted request the platform decides
later (`Delivered(follow_up=...)`) makes the work `confirming` until the adapter's first
follow-up; a follow-up's outcome is the platform's final word, or when to ask again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from firstparty.delivery import retry
from firstparty.delivery.outbox import Claim, DeliveryStatus, Finish
from firstparty.delivery.track import Link
from firstparty.destinations.base import Adapter, Delivered, Outcome, Rejected, Skipped

# Follow-ups wait as long again as the platform has been working, at least the adapter's
# `follow_up_delay` and at most this (Google: "poll with exponential backoff", up to 24 h).
FOLLOW_UP_MAX_WAIT = timedelta(hours=4)


def finish(
    policy: retry.Policy, claim: Claim, outcome: Outcome, now: datetime, draw: float
) -> Finish:
    if isinstance(outcome, Delivered):
        if outcome.test:  # the platform's words on the test send, if any, kept for the operator
            return Finish(claim, DeliveryStatus.TEST, now, outcome.detail or None)
        return Finish(claim, DeliveryStatus.DELIVERED, now)
    if isinstance(outcome, Skipped):
        return Finish(claim, DeliveryStatus.SKIPPED, now, outcome.reason)
    if isinstance(outcome, Rejected):
        return Finish(claim, DeliveryStatus.FAILED, now, outcome.reason)
    when = retry.next_attempt(
        policy,
        attempt=claim.attempt,
        first_attempt_at=claim.first_attempt_at,
        now=now,
        after=outcome.after,
        draw=draw,
    )
    if when is None:
        reason = retry.give_up_reason(policy, attempt=claim.attempt, reason=outcome.reason)
        return Finish(claim, DeliveryStatus.FAILED, now, reason)
    return Finish(claim, DeliveryStatus.PENDING, when, outcome.reason)


def confirming(adapter: Adapter, claim: Claim, outcome: Delivered, now: datetime) -> Finish:
    """Accepted; the platform's final word is asked for after the adapter's delay."""
    ask_at = now + timedelta(seconds=adapter.follow_up_delay)
    until = now + timedelta(seconds=max(adapter.follow_up_deadline, adapter.follow_up_delay))
    detail = outcome.detail or None
    return Finish(claim, DeliveryStatus.CONFIRMING, ask_at, detail, outcome.follow_up, until)


def follow_up(adapter: Adapter, claim: Claim, outcome: Outcome, now: datetime) -> Finish:
    """The platform's final word, or when to ask again (never past `confirm_until`)."""
    request_id, until = claim.request_id, claim.confirm_until
    assert until is not None
    if isinstance(outcome, Delivered):
        status = DeliveryStatus.TEST if outcome.test else DeliveryStatus.DELIVERED
        return Finish(claim, status, now, outcome.detail or None, request_id)
    if isinstance(outcome, Skipped):
        return Finish(claim, DeliveryStatus.SKIPPED, now, outcome.reason, request_id)
    if isinstance(outcome, Rejected):
        return Finish(claim, DeliveryStatus.FAILED, now, outcome.reason, request_id)
    if now >= until:
        reason = f"no final answer by the follow-up deadline ({until:%Y-%m-%d %H:%M} UTC): "
        return Finish(claim, DeliveryStatus.FAILED, now, reason + outcome.reason, request_id)
    accepted_at = until - timedelta(seconds=max(adapter.follow_up_deadline, 0.0))
    wait = max(now - accepted_at, timedelta(seconds=adapter.follow_up_delay))
    if outcome.after is not None:
        wait = timedelta(seconds=outcome.after)
    ask_at = min(now + min(wait, FOLLOW_UP_MAX_WAIT), until)
    return Finish(claim, DeliveryStatus.CONFIRMING, ask_at, outcome.reason, request_id, until)


def link(claim: Claim, outcome: Outcome) -> Link:
    kind = type(outcome).__name__.lower()
    reason = getattr(outcome, "reason", None)
    if isinstance(outcome, Delivered):
        kind = "confirming" if outcome.follow_up and not claim.follow_up else kind
        # Kept when the platform's word is the point: an accepted request id, a final status.
        reason = outcome.detail or None if outcome.follow_up or claim.follow_up else None
    return Link(claim.id, claim.event_pk, kind, reason)


def track_status(settled: Mapping[str, DeliveryStatus], pks: Sequence[str]) -> DeliveryStatus:
    """A request's status in the log: the worst of its events' (unsettled ones still wait)."""
    statuses = {settled.get(pk, DeliveryStatus.PENDING) for pk in pks}
    for status in (
        DeliveryStatus.FAILED,
        DeliveryStatus.PENDING,
        DeliveryStatus.CONFIRMING,
        DeliveryStatus.DELIVERED,
        DeliveryStatus.TEST,
    ):
        if status in statuses:
            return status
    return DeliveryStatus.SKIPPED
