"""Keep one audience in sync on its destinations: incremental and exact.

Per destination, the platform's list is known by what it acknowledged (`audience_members_acked`).
A run computes the members now (`members.matching`, consent applied, only those carrying an
identifier the platform matches on), then

    adds    = desired - acknowledged   (and members whose hashes changed: sent again)
    removes = acknowledged - desired   (converted out, consent withdrawn, erased, expired)

sends every add before any remove, in requests of at most `adapter.max_members` members, logs
each request in the outgoing-request log (`tracks`, as the delivery worker does, through
`delivery.send.Sender` and `delivery.track`), and marks acknowledged (or removed) exactly the
members the platform accepted. A member refused or not answered stays as it was: the next run
computes it again and retries it. Removals use the hashes the platform was sent, kept with the
acknowledgement, so an erased person is removed too.

Nothing of the audience's size is held (`_Pass`): the members arrive ascending by key, and each
destination's acknowledgements are read beside them in the same order (`db.code_point_order`,
checked as they come), so one merge yields the adds in requests while the members are read; the
keys that leave are kept (this run's removes), then removed with the hashes stored for them.

An add the platform accepted but decides later (`Delivered(follow_up=request id)`, Google) is
acknowledged *pending*: its rows carry the request id. Each run first asks the verdict of the
pending requests due (`adapter.follow_up`): confirmed rows lose the request id; refused ones (or
still undecided past `adapter.follow_up_deadline`) are dropped, so the same run adds them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import re
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from firstparty.audiences import members
from firstparty.audiences.base import AudienceAdapter, Change, Member
from firstparty.audiences.definition import AudienceSettings
from firstparty.delivery import boundary, send, track
from firstparty.delivery.outbox import DeliveryStatus
from firstparty.delivery.track import Sent
from firstparty.destinations.base import (
    Delivered,
    Outcome,
    OutgoingRequest,
    Rejected,
    Response,
    Retry,
)
from firstparty.errors import DeliveryError
from firstparty.store import db
from firstparty.store.models import audience_members_acked, audience_runs, audience_sizes

log = logging.getLogger(__name__)
ACKED = audience_members_acked


@dataclass(frozen=True)
class RunResult:
    """What one run did on one destination."""

    audience: str
    destination: str
    size: int  # members this destination should hold
    adds: int  # acknowledged additions
    removes: int  # acknowledged removals
    errors: int  # members not acknowledged (retried next run)
    detail: str = ""
    warning: str | None = None  # below the platform's minimum


def sent_identifiers(adapter: AudienceAdapter, member: Member) -> dict[str, str]:
    """The identifiers this platform matches on, as sent (and kept to remove the member)."""
    return {k: member.identifiers[k] for k in adapter.identifier_keys if member.identifiers.get(k)}


def digest(identifiers: Mapping[str, str]) -> str:
    return hashlib.sha256(json.dumps(dict(identifiers), sort_keys=True).encode()).hexdigest()


MINIMUM_NOTE = "before it can target this audience (synced anyway)"
_MINIMUM_TAIL = re.compile(
    r"(?:^|; )[^;]*: \d+ member\(s\) with an identifier \S+ matches on; "
    r"the platform needs about \d+ matched people " + re.escape(MINIMUM_NOTE) + "$"
)


def minimum_warning(adapter: AudienceAdapter, count: int) -> str | None:
    """A warning when fewer members than the platform needs to target the audience."""
    if count >= adapter.min_members:
        return None
    return (
        f"{adapter.settings.name}: {count} member(s) with an identifier {adapter.type} matches on; "
        f"the platform needs about {adapter.min_members} matched people {MINIMUM_NOTE}"
    )


def without_minimum_warning(detail: str) -> str:
    """A run's detail less its `minimum_warning` (always last: `_finish_run`), for the
    audiences page, which shows the warning on its own line."""
    return _MINIMUM_TAIL.sub("", detail)


class Syncer:
    """Runs audiences against their destinations; holds the HTTP sessions and token cache."""

    def __init__(self, *, engine: Engine, sender: send.Sender) -> None:
        self.engine = engine
        self.sender = sender

    async def run(
        self,
        audience: AudienceSettings,
        adapters: Mapping[str, AudienceAdapter],
        *,
        trigger: str,
        now: datetime | None = None,
    ) -> list[RunResult]:
        """One run of this audience on each of its destinations (those in `adapters`)."""
        now = now or datetime.now(UTC)
        runs: dict[str, _Run] = {}
        for name in audience.destinations:
            if name in adapters:
                runs[name] = await self._start(audience.name, adapters[name], trigger)
        the_pass = _Pass(self.engine, audience, {n: r.adapter for n, r in runs.items()}, now)
        try:
            await self._send(the_pass, runs)
        except Exception as exc:  # the database or the pass failed: each run says so, ended
            for name, run in runs.items():
                run.failed(f"the run stopped: {exc}")
                await self._finish(run, the_pass.tallies.get(name) or _Tally(run.adapter))
            raise
        await asyncio.to_thread(_record_size, self.engine, audience.name, the_pass, now)
        results = []
        for name in audience.destinations:
            if name in runs:
                results.append(await self._finish(runs[name], the_pass.tallies[name]))
            else:
                reason = "cannot send: its environment variable(s) are not set"
                results.append(RunResult(audience.name, name, 0, 0, 0, 0, reason))
        return results

    async def _send(self, the_pass: _Pass, runs: Mapping[str, _Run]) -> None:
        """Each step of the pass to its destination's run, the pass's blocking reads in threads."""
        steps = the_pass.steps()
        try:
            while (step := await asyncio.to_thread(next, steps, None)) is not None:
                await runs[step.destination].take(step)
        finally:
            await asyncio.to_thread(steps.close)

    async def _start(self, audience: str, adapter: AudienceAdapter, trigger: str) -> _Run:
        """The destination's run, recorded, with the verdicts on its pending adds asked first
        (a refused member is then computed again and added by this run)."""
        name = adapter.settings.name
        run_id = await asyncio.to_thread(_start_run, self.engine, audience, name, trigger)
        run = _Run(self, audience, adapter, run_id)
        await run.follow_ups(await asyncio.to_thread(_pending, self.engine, audience, name))
        return run

    async def _finish(self, run: _Run, tally: _Tally) -> RunResult:
        adapter = run.adapter
        warning = None if tally.held_before else minimum_warning(adapter, tally.size)
        if warning:
            log.warning("audience %s: %s", run.audience, warning)
        wanted = tally.adds + tally.removes
        result = RunResult(
            run.audience,
            adapter.settings.name,
            tally.size,
            run.adds,
            run.removes,
            wanted - run.adds - run.removes + run.dropped,
            "; ".join(run.problems[:3]),
            warning,
        )
        await asyncio.to_thread(_finish_run, self.engine, run.run_id, result)
        return result

    async def token_for(self, adapter: AudienceAdapter) -> str | None:
        """The adapter's access token (fetched and logged when not cached), if it needs one."""
        if not adapter.needs_token or adapter.settings.dry_run:
            return None

        async def logged(sent: Sent) -> None:
            await asyncio.to_thread(_log, self.engine, adapter.settings.name, sent)

        token, _fresh = await self.sender.token_of(adapter, logged)
        return token


@dataclass(frozen=True)
class Step:
    """One request's worth of changes for one destination."""

    destination: str
    change: Change
    members: list[Member]
    replaced: frozenset[str]  # keys acknowledged before with other hashes (an add replaces them)


@dataclass
class _Tally:
    """One destination's side of the pass: where its acknowledged set is read (member key and
    digest, ascending), what it found."""

    adapter: AudienceAdapter
    acked: Iterator[tuple[str, str]] = dataclasses.field(default_factory=lambda: iter(()))
    head: tuple[str, str] | None = None
    held_before: bool = False  # the platform held members before this run
    size: int = 0  # members it should hold
    adds: int = 0
    removes: int = 0
    leaving: list[str] = dataclasses.field(default_factory=list)  # keys to remove
    batch: list[Member] = dataclasses.field(default_factory=list)  # adds not yet sent
    replaced: set[str] = dataclasses.field(default_factory=set)

    def advance(self) -> None:
        before = self.head
        self.head = next(self.acked, None)
        _ascending(before and before[0], self.head and self.head[0])
        self.held_before |= self.head is not None

    def acked_digest(self, key: str) -> str | None:
        """The digest the platform acknowledged for this key; the keys it skipped over (held,
        no longer members) leave."""
        while self.head is not None and self.head[0] < key:
            self.leaving.append(self.head[0])
            self.advance()
        if self.head is None or self.head[0] != key:
            return None
        found = self.head[1]
        self.advance()
        return found


class _Pass:
    """One audience's members merged with each destination's acknowledged set, both streamed in
    ascending key order: adds go out in steps of at most `max_members` while the members are
    read, then the removes. What it holds: a step per destination and the keys leaving (the
    removes of this run), never the whole audience or the whole acknowledged set."""

    def __init__(
        self,
        engine: Engine,
        audience: AudienceSettings,
        adapters: Mapping[str, AudienceAdapter],
        now: datetime,
    ) -> None:
        self.engine = engine
        self.audience = audience
        self.adapters = adapters
        self.now = now
        self.size = 0  # people matching the rules
        self.consented = 0  # of whom ad platforms may get
        self.tallies: dict[str, _Tally] = {}

    def steps(self) -> Generator[Step, None, None]:
        """The pass (blocking: run each step in a thread)."""
        with contextlib.ExitStack() as stack:
            for name, adapter in self.adapters.items():
                conn = stack.enter_context(db.stream_reader(self.engine))
                tally = _Tally(adapter, _acked(conn, self.audience.name, name))
                tally.advance()
                self.tallies[name] = tally
            last: str | None = None
            people = members.matching(self.engine, self.audience, now=self.now)
            for member in stack.enter_context(contextlib.closing(people)):
                _ascending(last, member.key)
                last = member.key
                yield from self._member(member)
            for name, tally in self.tallies.items():
                yield from self._rest(name, tally)

    def _member(self, member: Member) -> Iterator[Step]:
        self.size += 1
        allowed = members.consented(member)
        self.consented += allowed
        for name, tally in self.tallies.items():
            before = tally.acked_digest(member.key)
            if not (allowed and tally.adapter.usable(member)):
                if before is not None:
                    tally.leaving.append(member.key)
                continue
            tally.size += 1
            if before == _digest(tally.adapter, member):
                continue
            tally.adds += 1
            tally.batch.append(member)
            if before is not None:
                tally.replaced.add(member.key)
            if len(tally.batch) >= tally.adapter.max_members:
                yield self._adds(name, tally)

    def _adds(self, name: str, tally: _Tally) -> Step:
        step = Step(name, Change.ADD, tally.batch, frozenset(tally.replaced))
        tally.batch, tally.replaced = [], set()
        return step

    def _rest(self, name: str, tally: _Tally) -> Iterator[Step]:
        """The last adds, then every remove: the keys acknowledged and no longer members, with
        the hashes the platform was sent."""
        while tally.head is not None:
            tally.leaving.append(tally.head[0])
            tally.advance()
        if tally.batch:
            yield self._adds(name, tally)
        batch: list[Member] = []
        for member in _sent(self.engine, self.audience.name, name, tally.leaving):
            tally.removes += 1
            batch.append(member)
            if len(batch) >= tally.adapter.max_members:
                yield Step(name, Change.REMOVE, batch, frozenset())
                batch = []
        if batch:
            yield Step(name, Change.REMOVE, batch, frozenset())


def _ascending(before: str | None, after: str | None) -> None:
    """A merge of two streams is exact only if each ascends: a database that ordered otherwise
    would have the run remove members it holds; stop it instead."""
    if before is not None and after is not None and not before < after:
        raise RuntimeError(f"audience keys out of order: {after!r} after {before!r}")


def _digest(adapter: AudienceAdapter, member: Member) -> str:
    return digest(sent_identifiers(adapter, member))


@dataclass(frozen=True)
class Pending:
    """An add the platform accepted and decides later: its request id and members."""

    request_id: str
    accepted_at: datetime
    keys: tuple[str, ...]


class _Run:
    """One destination's run in progress: sends, and saves what each answer settled."""

    def __init__(self, syncer: Syncer, audience: str, adapter: AudienceAdapter, run_id: int):
        self.syncer = syncer
        self.audience = audience
        self.adapter = adapter
        self.run_id = run_id
        self.adds = 0
        self.removes = 0
        self.dropped = 0  # members the platform refused after accepting them (sent again)
        self.problems: list[str] = []
        self.stopped = False  # its token or a send failed: the rest of the run sends nothing
        self._token: str | None = None
        self._token_error: DeliveryError | None = None

    def failed(self, reason: str) -> None:
        self.problems.append(reason)

    async def take(self, step: Step) -> None:
        """Send one step of the pass, unless an earlier failure stopped this destination."""
        if self.stopped:
            return
        try:
            await self.send(step.change, step.members, await self.token(), step.replaced)
        except DeliveryError as exc:
            self.failed(str(exc))
            self.stopped = True

    async def token(self) -> str | None:
        """The access token, fetched at most once a run (not at all when nothing is sent)."""
        if self._token_error is not None:
            raise self._token_error
        if self._token is None:
            try:
                self._token = await self.syncer.token_for(self.adapter)
            except DeliveryError as exc:
                self._token_error = exc
                raise
        return self._token

    async def follow_ups(self, pending: Sequence[Pending]) -> None:
        """Ask the platform's verdict on each add it accepted earlier (those due)."""
        now = datetime.now(UTC)
        delay = timedelta(seconds=self.adapter.follow_up_delay)
        for one in pending:
            if now < one.accepted_at + delay or self.adapter.settings.dry_run:
                continue
            try:
                await self._follow_up(one, now)
            except DeliveryError as exc:
                self.failed(f"request status of {one.request_id}: {exc}")
                if self._token_error is not None:
                    return

    async def _follow_up(self, one: Pending, now: datetime) -> None:
        adapter = self.adapter
        token = await self.token()
        with boundary.adapter_call(adapter, "follow_up"):
            request = adapter.follow_up(one.request_id, one.keys, token)
        response, sent = await self.syncer.sender.exchange(adapter, request)
        if response is None:
            outcomes: dict[str, Outcome] = {
                k: Retry(f"transport: {sent.error}") for k in request.event_pks
            }
        else:
            outcomes = _interpret_follow_up(adapter, request, response)
            if response.status == 401:
                self.syncer.sender.drop_token(adapter.settings.name)
        late = now >= one.accepted_at + timedelta(seconds=adapter.follow_up_deadline)
        confirmed = [k for k, o in outcomes.items() if isinstance(o, Delivered)]
        refused = {k: o for k, o in outcomes.items() if isinstance(o, Rejected)}
        waiting = [k for k, o in outcomes.items() if isinstance(o, Retry)]
        if late and waiting:
            gave_up = Rejected(
                f"no verdict by the follow-up deadline: {_reason(outcomes[waiting[0]])}"
            )
            refused |= dict.fromkeys(waiting, gave_up)
            waiting = []
        for outcome in list(refused.values())[:1]:
            self.failed(
                f"{one.request_id}: {len(refused)} member(s) refused, sent again: "
                + _reason(outcome)
            )
        status = (
            DeliveryStatus.FAILED
            if refused
            else DeliveryStatus.CONFIRMING
            if waiting
            else DeliveryStatus.DELIVERED
        )
        await asyncio.to_thread(
            _verdict,
            self.syncer.engine,
            audience=self.audience,
            destination=adapter.settings.name,
            request_id=one.request_id,
            confirmed=confirmed,
            refused=list(refused),
            sent=dataclasses.replace(sent, status=status),
        )
        self.dropped += len(refused)

    async def send(
        self,
        change: Change,
        batch: Sequence[Member],
        token: str | None,
        replaced: frozenset[str] = frozenset(),
    ) -> None:
        adapter = self.adapter
        try:
            with boundary.adapter_call(adapter, "build"):
                requests = adapter.build(change, batch, token)
        except DeliveryError as exc:
            self.failed(f"{change.value}: {exc}")
            return
        by_key = {m.key: m for m in batch}
        for request in requests:
            await self._one(change, request, by_key, replaced)

    async def _one(
        self,
        change: Change,
        request: OutgoingRequest,
        by_key: dict[str, Member],
        replaced: frozenset[str],
    ) -> None:
        adapter = self.adapter
        if adapter.settings.dry_run:
            sent = Sent(request, 1, DeliveryStatus.SKIPPED, error="dry_run: not sent")
            await asyncio.to_thread(_log, self.syncer.engine, adapter.settings.name, sent)
            self.failed("dry_run: nothing sent")
            return
        response, sent = await self.syncer.sender.exchange(adapter, request)
        if response is None:
            outcomes: dict[str, Outcome] = {
                k: Retry(f"transport: {sent.error}") for k in request.event_pks
            }
        else:
            outcomes = _interpret(adapter, request, response)
            if response.status == 401:
                self.syncer.sender.drop_token(adapter.settings.name)
        # Accepted in the platform's test mode (Google's validateOnly) stores nothing: not
        # acknowledged, so the members go for real once the test mode is off.
        accepted = [by_key[k] for k, o in outcomes.items() if _stored(o) and k in by_key]
        deferred = {k: o.follow_up for k, o in outcomes.items() if isinstance(o, Delivered)}
        refused = {k: o for k, o in outcomes.items() if not _stored(o)}
        for outcome in list(refused.values())[:1]:
            self.failed(f"{change.value}: {_reason(outcome)}")
        tested = refused and all(isinstance(o, Delivered) for o in refused.values())
        status = (
            DeliveryStatus.DELIVERED
            if not refused
            else DeliveryStatus.TEST
            if tested
            else DeliveryStatus.FAILED
        )
        await asyncio.to_thread(
            _settle,
            self.syncer.engine,
            audience=self.audience,
            adapter=adapter,
            change=change,
            accepted=accepted,
            deferred=deferred,
            replaced=replaced,
            sent=dataclasses.replace(sent, status=status),
        )
        if change == Change.ADD:
            self.adds += len(accepted)
        else:
            self.removes += len(accepted)


def _stored(outcome: Outcome) -> bool:
    return isinstance(outcome, Delivered) and not outcome.test


def _reason(outcome: Outcome) -> str:
    if isinstance(outcome, Delivered):
        return "accepted in the platform's test mode: nothing stored"
    return outcome.reason


def _interpret_follow_up(
    adapter: AudienceAdapter, request: OutgoingRequest, response: Response
) -> dict[str, Outcome]:
    missing = Retry("the adapter gave no verdict for this member")
    return _outcomes(adapter, "interpret_follow_up", request, response, missing)


def _interpret(
    adapter: AudienceAdapter, request: OutgoingRequest, response: Response
) -> dict[str, Outcome]:
    missing = Rejected("the adapter gave no outcome for this member")
    return _outcomes(adapter, "interpret", request, response, missing)


def _outcomes(
    adapter: AudienceAdapter,
    method: Literal["interpret", "interpret_follow_up"],
    request: OutgoingRequest,
    response: Response,
    missing: Outcome,
) -> dict[str, Outcome]:
    """The adapter's outcome per member key of the request; its failure, mapped, for them all."""
    try:
        with boundary.adapter_call(adapter, method):
            got = getattr(adapter, method)(request, response)
    except DeliveryError as exc:
        failed = boundary.outcome(exc)
        return {k: failed for k in request.event_pks}
    return {k: got.get(k, missing) for k in request.event_pks}


# ---------------------------------------------------------------- the database


def _acked(conn: Connection, audience: str, destination: str) -> Iterator[tuple[str, str]]:
    """(member key, digest of the hashes the platform acknowledged), ascending by key."""
    c = ACKED.c
    query = (
        sa.select(c.member_key, c.digest)
        .where(c.audience == audience, c.destination == destination)
        .order_by(db.code_point_order(c.member_key, conn.dialect))
    )
    for row in conn.execution_options(yield_per=members.STREAM_ROWS).execute(query):
        yield row.member_key, row.digest


def _pending(engine: Engine, audience: str, destination: str) -> list[Pending]:
    """The adds awaiting the platform's verdict, by request id, oldest first."""
    c = ACKED.c
    query = sa.select(c.request_id, c.member_key, c.acked_at).where(
        c.audience == audience, c.destination == destination, c.request_id.is_not(None)
    )
    found: dict[str, tuple[datetime, list[str]]] = {}
    with engine.connect() as conn:
        for row in conn.execution_options(yield_per=members.STREAM_ROWS).execute(query):
            at, keys = found.setdefault(row.request_id, (row.acked_at, []))
            keys.append(row.member_key)
            found[row.request_id] = (min(at, row.acked_at), keys)
    pending = [Pending(r, at, tuple(keys)) for r, (at, keys) in found.items()]
    return sorted(pending, key=lambda p: p.accepted_at)


def _verdict(
    engine: Engine,
    *,
    audience: str,
    destination: str,
    request_id: str,
    confirmed: list[str],
    refused: list[str],
    sent: Sent,
) -> None:
    """Log the follow-up; confirmed members stay acknowledged, refused ones are dropped (so the
    next computation adds them again); only rows still carrying this request id change."""
    c = ACKED.c
    where = (
        c.audience == sa.bindparam("a"),
        c.destination == sa.bindparam("d"),
        c.member_key == sa.bindparam("k"),
        c.request_id == sa.bindparam("r"),
    )
    params = {"a": audience, "d": destination, "r": request_id}
    with engine.begin() as conn:
        track.record(conn, destination=destination, sent=sent, now=datetime.now(UTC))
        if confirmed:
            conn.execute(
                sa.update(ACKED).where(*where).values(request_id=None),
                [{**params, "k": key} for key in confirmed],
            )
        if refused:
            conn.execute(sa.delete(ACKED).where(*where), [{**params, "k": key} for key in refused])


def _sent(engine: Engine, audience: str, destination: str, keys: list[str]) -> Iterator[Member]:
    """The members leaving, with the hashes the platform was sent (to remove them by)."""
    c = ACKED.c
    for start in range(0, len(keys), 500):
        query = sa.select(c.member_key, c.identifiers).where(
            c.audience == audience,
            c.destination == destination,
            c.member_key.in_(keys[start : start + 500]),
        )
        with db.reader(engine) as conn:
            found = conn.execute(query).all()
        yield from (Member(r.member_key, dict(r.identifiers or {})) for r in found)


def _settle(
    engine: Engine,
    *,
    audience: str,
    adapter: AudienceAdapter,
    change: Change,
    accepted: list[Member],
    deferred: Mapping[str, str | None],
    replaced: frozenset[str],
    sent: Sent,
) -> None:
    """Log the request and mark what the platform accepted, in one transaction."""
    destination = adapter.settings.name
    now = datetime.now(UTC)
    # Removed members, and added ones acknowledged before with other hashes, lose their row;
    # each by its whole primary key (an IN list over member_key alone let PostgreSQL scan every
    # row of the audience per statement: quadratic).
    gone = [m.key for m in accepted if change == Change.REMOVE or m.key in replaced]
    c = ACKED.c
    with engine.begin() as conn:
        track.record(conn, destination=destination, sent=sent, now=now)
        if gone:
            conn.execute(
                sa.delete(ACKED).where(
                    c.audience == sa.bindparam("a"),
                    c.destination == sa.bindparam("d"),
                    c.member_key == sa.bindparam("k"),
                ),
                [{"a": audience, "d": destination, "k": key} for key in gone],
            )
        if change == Change.ADD and accepted:
            rows = []
            for member in accepted:
                identifiers = sent_identifiers(adapter, member)
                rows.append(
                    {
                        "audience": audience,
                        "destination": destination,
                        "member_key": member.key,
                        "digest": digest(identifiers),
                        "identifiers": identifiers,
                        "acked_at": now,
                        "request_id": deferred.get(member.key),
                    }
                )
            db.bulk_insert(conn, ACKED, rows)


def _log(engine: Engine, destination: str, sent: Sent) -> None:
    with engine.begin() as conn:
        track.record(conn, destination=destination, sent=sent, now=datetime.now(UTC))


def _record_size(engine: Engine, audience: str, counted: _Pass, now: datetime) -> None:
    with engine.begin() as conn:
        db.insert_ignore(
            conn,
            audience_sizes,
            [
                {
                    "audience": audience,
                    "at": now,
                    "size": counted.size,
                    "consented": counted.consented,
                }
            ],
        )


def _start_run(engine: Engine, audience: str, destination: str, trigger: str) -> int:
    with engine.begin() as conn:
        result = conn.execute(
            sa.insert(audience_runs).values(
                audience=audience,
                destination=destination,
                trigger=trigger,
                started_at=datetime.now(UTC),
                size=0,  # known when the pass is done (_finish_run)
                adds=0,
                removes=0,
                errors=0,
            )
        )
        key = result.inserted_primary_key
        assert key is not None
        return int(key[0])


def _finish_run(engine: Engine, run_id: int, result: RunResult) -> None:
    detail = "; ".join(d for d in (result.detail, result.warning or "") if d) or None
    with engine.begin() as conn:
        conn.execute(
            sa.update(audience_runs)
            .where(audience_runs.c.id == run_id)
            .values(
                finished_at=datetime.now(UTC),
                size=result.size,
                adds=result.adds,
                removes=result.removes,
                errors=result.errors,
                detail=detail,
            )
        )
