"""Deliver one batch to one destination: skip, get a token, build, send, interpret, decide.

This is the only place that does destination I/O. One aiohttp session per destination keeps
its connections alive; its timeout is the destination's `timeout_seconds`. Transport errors
and timeouts are retryable. Nothing here touches the database: the caller saves the result.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
import msgspec

from firstparty.delivery import retry
from firstparty.delivery.claim import Claim, Finish
from firstparty.delivery.track import Link, Sent
from firstparty.destinations.base import (
    Adapter,
    Delivered,
    Event,
    Outcome,
    OutgoingRequest,
    Rejected,
    Response,
    Retry,
    Skipped,
)
from firstparty.settings import DeliverySettings

log = logging.getLogger(__name__)

# Per destination; batching keeps the number of requests small anyway.
CONNECTIONS_PER_DESTINATION = 32
# Renew a token this long before the platform says it expires.
TOKEN_MARGIN_SECONDS = 60.0


@dataclass(frozen=True)
class Result:
    """What one batch did: how each claim ends, and the requests to log."""

    destination: str
    finishes: list[Finish]
    sent: list[Sent]


@dataclass
class _Answer:
    response: Response | None
    error: str | None
    duration_ms: float
    encoded: bytes | None = None  # the JSON body as sent


class Sender:
    """Sends batches; holds the HTTP sessions and the token cache of every destination."""

    def __init__(self, delivery: DeliverySettings) -> None:
        self.delivery = delivery
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._tokens: dict[str, tuple[str, float]] = {}
        self._token_locks: dict[str, asyncio.Lock] = {}

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()

    async def deliver(
        self, adapter: Adapter, claims: Sequence[Claim], events: Mapping[str, Event]
    ) -> Result:
        """Send this batch (all of one destination) and decide the fate of every claim."""
        now = datetime.now(UTC)
        outcomes: dict[str, Outcome] = {}
        live: list[Event] = []
        for claim in claims:
            event = events.get(claim.event_pk)
            if event is None:
                outcomes[claim.event_pk] = Rejected("the event row is missing")
            elif reason := adapter.skip(event, now):
                outcomes[claim.event_pk] = Skipped(reason)
            else:
                live.append(event)
        attempt = {c.event_pk: c.attempt for c in claims}
        answered = await self._send_all(adapter, live, attempt) if live else []
        for _sent, got in answered:
            outcomes.update(got)
        # The platform refused a batch without naming the culprit: send each event on its own,
        # so one bad event fails alone and the others go through in this same round.
        alone = [e for e in live if _alone(outcomes.get(e.pk)) and len(live) > 1]
        for again in await asyncio.gather(*(self._send_all(adapter, [e], attempt) for e in alone)):
            for _sent, got in again:
                outcomes.update(got)
            answered.extend(again)
        return _decide(self.delivery, adapter, claims, outcomes, answered, now)

    async def _send_all(
        self, adapter: Adapter, events: list[Event], attempt: Mapping[str, int]
    ) -> list[tuple[Sent, dict[str, Outcome]]]:
        token_sent: list[tuple[Sent, dict[str, Outcome]]] = []
        token: str | None = None
        if adapter.token_request() is not None and not adapter.settings.dry_run:
            token, failure = await self._token(adapter, token_sent)
            if failure is not None:
                return [*token_sent, (_no_request(), {e.pk: failure for e in events})]
        try:
            requests = adapter.build(events, token)
        except Exception as exc:  # an adapter bug must fail this work visibly, not the worker
            log.exception("adapter %s failed to build", adapter.settings.name)
            return [(_no_request(), {e.pk: Rejected(f"adapter error: {exc!r}") for e in events})]
        if adapter.settings.dry_run:
            return [*token_sent, *(_dry(req, attempt) for req in requests)]
        sends = [self._one(adapter, req, attempt) for req in requests]
        return [*token_sent, *await asyncio.gather(*sends)]

    async def _one(
        self, adapter: Adapter, request: OutgoingRequest, attempt: Mapping[str, int]
    ) -> tuple[Sent, dict[str, Outcome]]:
        answer = await self._http(adapter, request)
        first = attempt.get(request.event_pks[0], 1) if request.event_pks else 1
        if answer.response is None:
            reason = f"transport: {answer.error}"
            got: dict[str, Outcome] = {pk: Retry(reason) for pk in request.event_pks}
        else:
            if answer.response.status == 401:
                self._tokens.pop(adapter.settings.name, None)  # refresh it on the next try
            got = _interpret(adapter, request, answer.response)
        sent = Sent(
            request=request,
            attempt=first,
            status="pending",  # settled in _decide, once the retry budget is known
            response_status=answer.response.status if answer.response else None,
            response_body=answer.response.body if answer.response else None,
            duration_ms=answer.duration_ms,
            error=answer.error,
            encoded=answer.encoded,
        )
        return sent, got

    async def _token(
        self, adapter: Adapter, log_into: list[tuple[Sent, dict[str, Outcome]]]
    ) -> tuple[str | None, Outcome | None]:
        name = adapter.settings.name
        async with self._token_locks.setdefault(name, asyncio.Lock()):
            cached = self._tokens.get(name)
            if cached and cached[1] > time.monotonic():
                return cached[0], None
            request = adapter.token_request()
            assert request is not None
            answer = await self._http(adapter, request)
            response = answer.response
            ok = response is not None and 200 <= response.status < 300
            if not ok:
                log_into.append((_sent_of(request, answer, "failed"), {}))
            if response is None:
                return None, Retry(f"token request: {answer.error}")
            if not ok:
                text = response.body[:300].decode("utf-8", "replace")
                reason = f"token request refused: HTTP {response.status}: {text}"
                return None, Rejected(reason) if response.status < 500 else Retry(reason)
            try:
                token, lifetime = adapter.read_token(response)
            except Exception as exc:  # a malformed answer is the platform's problem: retry
                log_into.append((_sent_of(request, answer, "failed"), {}))
                return None, Retry(f"token answer unreadable: {exc!r}")
            # The answer carries the new token: mask it in the log as well.
            masked = dataclasses.replace(request, secrets=(*request.secrets, token))
            log_into.append((_sent_of(masked, answer, "delivered"), {}))
            self._tokens[name] = (token, time.monotonic() + lifetime - TOKEN_MARGIN_SECONDS)
            return token, None

    async def _http(self, adapter: Adapter, request: OutgoingRequest) -> _Answer:
        session = self._session(adapter)
        headers = dict(request.headers)
        data, encoded = request.body, None
        if request.json is not None:
            data = encoded = msgspec.json.encode(request.json)
            headers.setdefault("Content-Type", "application/json")
        start = time.perf_counter()
        try:
            async with session.request(
                request.method, request.url, data=data, headers=headers
            ) as resp:
                body = await resp.read()
                response = Response(resp.status, dict(resp.headers), body)
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = f"{type(exc).__name__}: {exc}".rstrip(": ")
            return _Answer(None, error, (time.perf_counter() - start) * 1000, encoded)
        return _Answer(response, None, (time.perf_counter() - start) * 1000, encoded)

    def _session(self, adapter: Adapter) -> aiohttp.ClientSession:
        name = adapter.settings.name
        if name not in self._sessions:
            self._sessions[name] = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=adapter.settings.timeout_seconds),
                connector=aiohttp.TCPConnector(limit=CONNECTIONS_PER_DESTINATION),
            )
        return self._sessions[name]


def _alone(outcome: Outcome | None) -> bool:
    return isinstance(outcome, Retry) and outcome.alone


def _interpret(
    adapter: Adapter, request: OutgoingRequest, response: Response
) -> dict[str, Outcome]:
    try:
        got = adapter.interpret(request, response)
    except Exception as exc:  # an adapter bug must fail this work visibly, not the worker
        log.exception("adapter %s failed to interpret", adapter.settings.name)
        return {pk: Rejected(f"adapter error: {exc!r}") for pk in request.event_pks}
    missing = Rejected("the adapter gave no outcome for this event")
    return {pk: got.get(pk, missing) for pk in request.event_pks}


def _dry(request: OutgoingRequest, attempt: Mapping[str, int]) -> tuple[Sent, dict[str, Outcome]]:
    first = attempt.get(request.event_pks[0], 1) if request.event_pks else 1
    sent = Sent(request=request, attempt=first, status="skipped", error="dry_run: not sent")
    return sent, {pk: Skipped("dry_run") for pk in request.event_pks}


def _no_request() -> Sent:
    """A placeholder for outcomes decided without any request (logged by nobody)."""
    return Sent(request=OutgoingRequest("POST", "", ()), attempt=0, status="none")


def _sent_of(request: OutgoingRequest, answer: _Answer, status: str) -> Sent:
    response = answer.response
    return Sent(
        request=request,
        attempt=1,
        status=status,
        response_status=response.status if response else None,
        response_body=response.body if response else None,
        duration_ms=answer.duration_ms,
        error=answer.error,
    )


def _decide(
    delivery: DeliverySettings,
    adapter: Adapter,
    claims: Sequence[Claim],
    outcomes: Mapping[str, Outcome],
    answered: Sequence[tuple[Sent, dict[str, Outcome]]],
    now: datetime,
) -> Result:
    policy = retry.policy_for(delivery, adapter.settings)
    not_built = Skipped("the adapter built no request for this event")
    draw = retry.jitter()
    finishes = {
        c.event_pk: _finish(policy, c, outcomes.get(c.event_pk, not_built), now, draw)
        for c in claims
    }
    by_pk = {c.event_pk: c for c in claims}
    sent: list[Sent] = []
    for one, got in answered:
        if one.status == "none":
            continue
        links = [_link(by_pk[pk], got[pk]) for pk in one.request.event_pks]
        status = one.status if one.status != "pending" else _track_status(finishes, one)
        sent.append(dataclasses.replace(one, status=status, links=links))
    return Result(adapter.settings.name, list(finishes.values()), sent)


def _finish(
    policy: retry.Policy, claim: Claim, outcome: Outcome, now: datetime, draw: float
) -> Finish:
    if isinstance(outcome, Delivered):
        return Finish(claim, "delivered", now)
    if isinstance(outcome, Skipped):
        return Finish(claim, "skipped", now, outcome.reason)
    if isinstance(outcome, Rejected):
        return Finish(claim, "failed", now, outcome.reason)
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
        return Finish(claim, "failed", now, reason)
    return Finish(claim, "pending", when, outcome.reason)


def _link(claim: Claim, outcome: Outcome) -> Link:
    kind = type(outcome).__name__.lower()
    reason = None if isinstance(outcome, Delivered) else getattr(outcome, "reason", None)
    return Link(claim.id, claim.event_pk, kind, reason)


def _track_status(finishes: Mapping[str, Finish], sent: Sent) -> str:
    statuses = {finishes[pk].status for pk in sent.request.event_pks}
    for status in ("failed", "pending", "delivered"):
        if status in statuses:
            return status
    return "skipped"
