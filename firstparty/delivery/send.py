"""Deliver one batch to one destination: skip, get a token, build, send, interpret, decide.

Every event time handed to an adapter is at most the send time (`clamp`: a platform refuses an
event from the future). Work a platform accepted but decides later (`Delivered(follow_up=...)`)
stays `confirming`; its follow-up claims ask the platform (`Adapter.follow_up`) instead of
sending the event again, until the platform's final word or the adapter's deadline. An access
token refused with HTTP 401 is dropped and the work retried promptly with a new one, once: a
401 to a token fetched for that very request is the platform's final answer.

This is the only place that does destination I/O. One aiohttp session per destination keeps
its connections alive; its timeout is the destination's `timeout_seconds`. Transport errors
and timeouts are retryable. Every adapter call goes through `boundary.adapter_call`, so what an
adapter raises becomes an outcome of its own batch. Nothing here touches the database: each
answer's settlement goes to the caller's `save` the moment it is known (worker.py writes it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import aiohttp
import msgspec

from firstparty.delivery import boundary, health, retry, settle
from firstparty.delivery.outbox import Claim, DeliveryStatus, Finish
from firstparty.delivery.track import Sent
from firstparty.destinations.base import (
    Adapter,
    Delivered,
    Outcome,
    OutgoingRequest,
    Rejected,
    Response,
    Retry,
    Skipped,
    retry_after,
)
from firstparty.errors import AdapterError, DeliveryError, PermanentError, RetryableError
from firstparty.event import Event
from firstparty.settings import DeliverySettings

log = logging.getLogger(__name__)

# Per destination; batching keeps the number of requests small anyway.
CONNECTIONS_PER_DESTINATION = 32
# Renew a token this long before the platform says it expires.
TOKEN_MARGIN_SECONDS = 60.0
# After a 401 to a cached token: try again this soon, with a new token.
TOKEN_RETRY_SECONDS = 1.0


@dataclass(frozen=True)
class Settled:
    """What one answer (or one decision taken without a request) settled: claims and log."""

    destination: str
    finishes: list[Finish]
    sent: list[Sent]
    # What the delivery health and match quality rollups count of it (`health.record`).
    facts: list[health.Fact] = field(default_factory=list)


# Makes a settlement durable; `deliver` awaits it before it counts the claims as settled.
Save = Callable[[Settled], Awaitable[None]]
# Logs one request sent outside a batch (a token request), durably, before `token_of` returns.
LogSent = Callable[[Sent], Awaitable[None]]


class Tokened(boundary.Configured, Protocol):
    """What `token_of` needs of an adapter: a destination's or an audience's (audiences.sync)."""

    @property
    def needs_token(self) -> bool: ...

    def token_request(self) -> OutgoingRequest | None: ...

    def read_token(self, response: Response) -> tuple[str, float]: ...


@dataclass
class _Answer:
    response: Response | None
    error: str | None
    duration_ms: float
    encoded: bytes | None = None  # the JSON body as sent


class _Batch:
    """One batch of one destination being delivered: settles each claim as its answer comes."""

    def __init__(
        self, delivery: DeliverySettings, adapter: Adapter, claims: Sequence[Claim], save: Save
    ) -> None:
        self.adapter = adapter
        self.now = datetime.now(UTC)
        self.policy = retry.policy_for(delivery, adapter.settings)
        self.draw = retry.jitter()
        self.claims = {c.event_pk: c for c in claims}
        self.open = set(self.claims)  # not settled yet
        self.alone: list[str] = []  # refused in a batch without a culprit: resend one by one
        self.events: Mapping[str, Event] = {}  # the claims' events, as sent
        self._save = save

    def attempt(self, request: OutgoingRequest) -> int:
        first = self.claims.get(request.event_pks[0]) if request.event_pks else None
        return first.attempt if first else 1

    async def settle(
        self, got: Mapping[str, Outcome], sent: Sent | None = None, *, split: bool = False
    ) -> None:
        """Save what this answer decided, now: a worker killed later will not send it again."""
        final: dict[str, Outcome] = {}
        for pk, outcome in got.items():
            if split and isinstance(outcome, Retry) and outcome.alone:
                self.alone.append(pk)
            elif pk in self.open:
                final[pk] = outcome
        finishes = [self._finish(self.claims[pk], o) for pk, o in final.items()]
        logged = [] if sent is None else [self._logged(sent, got, finishes)]
        if finishes or logged:
            facts = health.facts(finishes, final, self.events, sent)
            await self._save(Settled(self.adapter.settings.name, finishes, logged, facts))
        self.open -= final.keys()

    def _logged(self, sent: Sent, got: Mapping[str, Outcome], finishes: list[Finish]) -> Sent:
        pks = [pk for pk in sent.request.event_pks if pk in self.claims]
        links = [settle.link(self.claims[pk], got[pk]) for pk in pks if pk in got]
        status = sent.status or settle.track_status(
            {f.claim.event_pk: f.status for f in finishes}, pks
        )
        return dataclasses.replace(sent, status=status, links=links)

    def _finish(self, claim: Claim, outcome: Outcome) -> Finish:
        if claim.follow_up:
            return settle.follow_up(self.adapter, claim, outcome, self.now)
        if isinstance(outcome, Delivered) and outcome.follow_up and not outcome.test:
            return settle.confirming(self.adapter, claim, outcome, self.now)
        return settle.finish(self.policy, claim, outcome, self.now, self.draw)


class Sender:
    """Sends batches; holds the HTTP sessions and the token cache of every destination."""

    def __init__(self, delivery: DeliverySettings) -> None:
        self.delivery = delivery
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._tokens: dict[str, tuple[str, float]] = {}
        self._token_locks: dict[str, asyncio.Lock] = {}
        self._retired: list[aiohttp.ClientSession] = []

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()
        for session in self._retired:
            await session.close()
        self._retired.clear()

    def forget(self, name: str) -> None:
        """A destination changed (admin UI): a new token and session for its next batch; the
        old session is closed with the others, after what it may still be sending."""
        self._tokens.pop(name, None)
        session = self._sessions.pop(name, None)
        if session is not None:
            self._retired.append(session)

    async def deliver(
        self,
        adapter: Adapter,
        claims: Sequence[Claim],
        events: Mapping[str, Event],
        save: Save,
    ) -> None:
        """Send this batch (all of one destination), saving each claim's end as soon as known.

        Raises only what `save` raises (the database): every adapter failure is an outcome.
        """
        batch = _Batch(self.delivery, adapter, claims, save)
        # This batch's events only: `events` holds the whole claim's (up to 2,000), and a
        # destination of one event per request has as many batches as events.
        events = {
            c.event_pk: clamp(events[c.event_pk], batch.now) for c in claims if c.event_pk in events
        }
        batch.events = events
        follow_ups = [c for c in claims if c.follow_up]
        if follow_ups:
            await self._follow_up(batch, follow_ups, events)
        sends = [c for c in claims if not c.follow_up]
        live = await self._unsendable(batch, sends, events)
        if live:
            await self._send_all(batch, live, split=len(live) > 1)
        # The platform refused a batch without naming the culprit: send each event on its own,
        # so one bad event fails alone and the others go through in this same round.
        alone = [events[pk] for pk in batch.alone]
        await asyncio.gather(*(self._send_all(batch, [e], split=False) for e in alone))
        not_built = Skipped("the adapter built no request for this event")
        await batch.settle({pk: not_built for pk in batch.open})

    async def _unsendable(
        self, batch: _Batch, claims: Sequence[Claim], events: Mapping[str, Event]
    ) -> list[Event]:
        """Settle the claims that cannot be sent (row gone, adapter skips); return the rest."""
        outcomes: dict[str, Outcome] = {}
        live: list[Event] = []
        for claim in claims:
            event = events.get(claim.event_pk)
            if event is None:
                outcomes[claim.event_pk] = Rejected("the event row is missing")
                continue
            try:
                with boundary.adapter_call(batch.adapter, "skip"):
                    reason = batch.adapter.skip(event, batch.now)
            except DeliveryError as exc:
                outcomes[claim.event_pk] = boundary.outcome(exc)
                continue
            if reason:
                outcomes[claim.event_pk] = Skipped(reason)
            else:
                live.append(event)
        await batch.settle(outcomes)
        return live

    async def _send_all(self, batch: _Batch, events: list[Event], *, split: bool) -> None:
        adapter = batch.adapter
        dry_run = adapter.settings.dry_run
        token: str | None = None
        fresh = False
        try:
            if adapter.needs_token and not dry_run:
                token, fresh = await self._token(batch)
            with boundary.adapter_call(adapter, "build"):
                requests = adapter.build(events, token)
        except DeliveryError as exc:
            await batch.settle({e.pk: boundary.outcome(exc) for e in events})
            return
        if dry_run:
            for request in requests:
                await batch.settle(*_dry(request, batch.attempt(request)))
            return
        await asyncio.gather(
            *(self._one(batch, request, split=split, fresh=fresh) for request in requests)
        )

    async def _one(
        self,
        batch: _Batch,
        request: OutgoingRequest,
        *,
        split: bool,
        fresh: bool,
        asked: Sequence[Event] | None = None,
    ) -> None:
        """Send one request and settle what its answer decided (`asked`: a follow-up's events)."""
        adapter = batch.adapter
        answer = await self._http(adapter, request)
        if answer.response is None:
            reason = f"transport: {answer.error}"
            got: dict[str, Outcome] = {pk: Retry(reason) for pk in request.event_pks}
        else:
            got = _interpret(adapter, request, answer.response, asked)
            if answer.response.status == 401 and adapter.needs_token:
                self._tokens.pop(adapter.settings.name, None)  # a new one for the next try
                if not fresh:  # the cached token went stale: retry promptly, once
                    got = {pk: _stale_token(o) for pk, o in got.items()}
        sent = _sent_of(request, answer, None, batch.attempt(request))
        await batch.settle(got, sent, split=split)

    async def _follow_up(
        self, batch: _Batch, claims: Sequence[Claim], events: Mapping[str, Event]
    ) -> None:
        """Ask the platform what became of the requests it accepted, one call per request id."""
        adapter = batch.adapter
        missing = Rejected("the event row is missing")
        await batch.settle({c.event_pk: missing for c in claims if c.event_pk not in events})
        groups: dict[str, list[Event]] = {}
        for claim in claims:
            if claim.event_pk in events and claim.request_id:
                groups.setdefault(claim.request_id, []).append(events[claim.event_pk])
        token: str | None = None
        fresh = False
        requests: list[tuple[OutgoingRequest, list[Event]]] = []
        try:
            if adapter.needs_token:
                token, fresh = await self._token(batch)
        except DeliveryError as exc:
            failed = boundary.outcome(exc)
            await batch.settle({e.pk: failed for group in groups.values() for e in group})
            return
        for request_id, group in groups.items():
            try:
                with boundary.adapter_call(adapter, "follow_up"):
                    requests.append((adapter.follow_up(request_id, group, token), group))
            except DeliveryError as exc:
                await batch.settle({e.pk: boundary.outcome(exc) for e in group})
        await asyncio.gather(
            *(
                self._one(batch, request, split=False, fresh=fresh, asked=group)
                for request, group in requests
            )
        )

    async def _token(self, batch: _Batch) -> tuple[str, bool]:
        """The destination's access token, and whether it was fetched just now (logged)."""

        async def log(sent: Sent) -> None:
            await batch.settle({}, sent)

        return await self.token_of(batch.adapter, log)

    async def token_of(self, adapter: Tokened, log: LogSent) -> tuple[str, bool]:
        """The adapter's access token, and whether it was fetched just now (its request logged
        through `log`).

        Raises `DeliveryError` when there is none to be had; the caller fails its work with it.
        """
        name = adapter.settings.name
        async with self._token_locks.setdefault(name, asyncio.Lock()):
            cached = self._tokens.get(name)
            if cached and cached[1] > time.monotonic():
                return cached[0], False
            with boundary.adapter_call(adapter, "token_request"):
                request = adapter.token_request()
            if request is None:
                raise AdapterError("adapter error in token_request: it built no request")
            answer = await self._http(adapter, request)
            try:
                token, lifetime = _read_token(adapter, answer)
            except DeliveryError:
                await log(_sent_of(request, answer, DeliveryStatus.FAILED))
                raise
            # The answer carries the new token: mask it in the log as well.
            masked = dataclasses.replace(request, secrets=(*request.secrets, token))
            await log(_sent_of(masked, answer, DeliveryStatus.DELIVERED))
            self._tokens[name] = (token, time.monotonic() + lifetime - TOKEN_MARGIN_SECONDS)
            return token, True

    def drop_token(self, name: str) -> None:
        """Forget a destination's cached token (the platform refused it: HTTP 401)."""
        self._tokens.pop(name, None)

    async def exchange(
        self, adapter: boundary.Configured, request: OutgoingRequest
    ) -> tuple[Response | None, Sent]:
        """Send one request outside a batch (audiences.sync): the answer, None on a transport
        error, and its log entry (status left for the caller to set)."""
        answer = await self._http(adapter, request)
        return answer.response, _sent_of(request, answer, None)

    async def _http(self, adapter: boundary.Configured, request: OutgoingRequest) -> _Answer:
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

    def _session(self, adapter: boundary.Configured) -> aiohttp.ClientSession:
        name = adapter.settings.name
        if name not in self._sessions:
            self._sessions[name] = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=adapter.settings.timeout_seconds),
                connector=aiohttp.TCPConnector(limit=CONNECTIONS_PER_DESTINATION),
            )
        return self._sessions[name]


def _read_token(adapter: Tokened, answer: _Answer) -> tuple[str, float]:
    """The token from a token answer, or the `DeliveryError` that says why there is none."""
    response = answer.response
    if response is None:
        raise RetryableError(f"token request: {answer.error}")
    if not 200 <= response.status < 300:
        text = response.body[:300].decode("utf-8", "replace")
        reason = f"token request refused: HTTP {response.status}: {text}"
        if response.status in (408, 429) or response.status >= 500:
            raise RetryableError(reason, retry_after(response.headers))
        raise PermanentError(reason)
    try:
        with boundary.adapter_call(adapter, "read_token"):
            return adapter.read_token(response)
    except AdapterError as exc:  # a malformed answer on a 2xx is the platform's problem
        raise RetryableError(f"token answer unreadable: {exc}") from exc


def clamp(event: Event, now: datetime) -> Event:
    """The event as sent at `now`: never dated later than the send (platforms refuse that)."""
    if event.occurred_at <= now:
        return event
    return dataclasses.replace(event, occurred_at=now)


def _stale_token(outcome: Outcome) -> Outcome:
    if isinstance(outcome, Rejected):
        reason = f"access token refused (HTTP 401), retrying with a new one: {outcome.reason}"
        return Retry(reason, TOKEN_RETRY_SECONDS)
    return outcome


def _interpret(
    adapter: Adapter,
    request: OutgoingRequest,
    response: Response,
    asked: Sequence[Event] | None = None,
) -> dict[str, Outcome]:
    try:
        if asked is None:
            with boundary.adapter_call(adapter, "interpret"):
                got = adapter.interpret(request, response)
        else:
            with boundary.adapter_call(adapter, "interpret_follow_up"):
                got = adapter.interpret_follow_up(request, response, asked)
    except DeliveryError as exc:
        failed = boundary.outcome(exc)
        return {pk: failed for pk in request.event_pks}
    missing = Rejected("the adapter gave no outcome for this event")
    return {pk: got.get(pk, missing) for pk in request.event_pks}


def _dry(request: OutgoingRequest, attempt: int) -> tuple[dict[str, Outcome], Sent]:
    sent = Sent(
        request=request, attempt=attempt, status=DeliveryStatus.SKIPPED, error="dry_run: not sent"
    )
    return {pk: Skipped("dry_run") for pk in request.event_pks}, sent


def _sent_of(
    request: OutgoingRequest, answer: _Answer, status: DeliveryStatus | None, attempt: int = 1
) -> Sent:
    response = answer.response
    return Sent(
        request=request,
        attempt=attempt,
        status=status,
        response_status=response.status if response else None,
        response_body=response.body if response else None,
        duration_ms=answer.duration_ms,
        error=answer.error,
        encoded=answer.encoded,
    )
