"""The delivery worker: claim due work, deliver it in batches per destination, save the outcome.

A worker runs `concurrency` lanes (asyncio tasks); each loops claim -> load -> send (saving each
answer as it arrives, `Recorder`, while a heartbeat renews the lease of the rest) and,
when it finds less than a full claim, waits for a wake-up (`queue.py`), the poll interval
(`sweep_interval_seconds`) or the next retry falling due, whichever comes first. Database calls
are synchronous SQLAlchemy, run in threads so the loop never blocks. `firstparty worker` runs
one with `run_worker`; `firstparty serve` runs one inside the server on the embedded default.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from firstparty import heap, metrics
from firstparty import settings as settings_mod
from firstparty.alerts import loop as alerts_loop
from firstparty.audiences import service as audience_service
from firstparty.delivery import health, load, outbox, queue, send, track, verdicts
from firstparty.delivery.outbox import Claim, DeliveryStatus
from firstparty.destinations.base import Adapter, Rejected
from firstparty.destinations.book import DestinationBook
from firstparty.event import Event
from firstparty.reports import funnel_rounds
from firstparty.settings import Settings
from firstparty.store import db

log = logging.getLogger(__name__)

# Sources can be added while a worker runs (`firstparty sources create`): re-read their kinds.
SOURCE_KINDS_TTL = 30.0
# How long `stop()` lets a lane finish the batch it is sending before cancelling it.
STOP_GRACE_SECONDS = 15.0
# A live worker renews its leases this often per lease: two renewals may fail before it lapses.
HEARTBEATS_PER_LEASE = 3
# Lanes, each claiming at most one full batch of the biggest destination: what a worker holds at
# once (events, request bodies, the request log) is about LANES x that batch. bench/deliver:
# 4 lanes of 2 batches peaked at 241-275 MB RSS, 2 lanes of 1 batch at 135-140 MB, batching ~8 %
# fewer a second (2 cores: a lane waits on its database thread or on the platform, and the other
# lane runs meanwhile).
LANES = 2
# A lane's batches of one destination sent at once. An unbatched destination's claim is up to
# 1,000 one-event batches: all started together, they waited on the session's 32 connections
# holding their requests, and bench/deliver's worker went from 107 to 178 MB RSS in its
# unbatched phase. Twice the connections: the next requests are ready while answers are saved.
BATCHES_IN_FLIGHT = 2 * send.CONNECTIONS_PER_DESTINATION


class Worker:
    """Delivers the outbox of the destinations in `adapters`, or those `book` holds now (looked
    at before each round, so a destination added or disabled in the admin UI is followed)."""

    def __init__(
        self,
        *,
        settings: Settings,
        engine: Engine,
        adapters: dict[str, Adapter],
        queue: queue.Queue,
        concurrency: int = LANES,
        claim_limit: int | None = None,
        book: DestinationBook | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.book = book
        self._fixed = adapters
        self._seen: dict[str, Adapter] = dict(adapters)
        self.queue = queue
        self.concurrency = concurrency
        biggest = max((a.batch_size for a in self.adapters.values()), default=1)
        self.claim_limit = claim_limit or min(max(biggest, 64), 2000)
        self.sender = send.Sender(settings.delivery)
        self.recorder = Recorder(engine)
        self._kinds: dict[str, load.SourceKind] = {}
        self._kinds_at = -SOURCE_KINDS_TTL
        self._lanes: list[asyncio.Task[None]] = []
        self._idle: set[int] = set()
        self._stopping = False

    async def start(self) -> None:
        """Start the lanes as tasks of the running loop."""
        self._stopping = False
        self._lanes = [asyncio.create_task(self._lane(i)) for i in range(self.concurrency)]

    async def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Let lanes finish what they are sending, then close the HTTP sessions."""
        self._stopping = True
        for index, lane in enumerate(self._lanes):
            if index in self._idle:
                lane.cancel()
        if self._lanes:
            _done, pending = await asyncio.wait(self._lanes, timeout=grace)
            for lane in pending:
                lane.cancel()  # its round hands back what it still holds
            await asyncio.gather(*self._lanes, return_exceptions=True)
        self._lanes = []
        await self.recorder.close()
        await self.sender.close()

    @property
    def adapters(self) -> dict[str, Adapter]:
        """The destinations this worker delivers now."""
        return self._fixed if self.book is None else self.book.deliverable()

    async def _current(self) -> dict[str, Adapter]:
        """The adapters for this round, the book looked at first; a changed destination's
        cached token and session are dropped."""
        if self.book is not None:
            await asyncio.to_thread(self.book.reload_if_due)
        adapters = self.adapters
        for name, adapter in adapters.items():
            if self._seen.get(name, adapter) is not adapter:
                self.sender.forget(name)
        self._seen = dict(adapters)
        return adapters

    async def run_once(self) -> int:
        """Claim one round of due work and deliver it; returns how many deliveries it claimed.

        Each answer is saved as it arrives; a heartbeat keeps the lease of the rest alive. If
        the round fails (the database went away), what it still holds is handed back at once.
        """
        adapters = await self._current()
        claims = await asyncio.to_thread(
            outbox.claim,
            self.engine,
            destinations=adapters.keys(),
            now=datetime.now(UTC),
            lease_seconds=self.settings.delivery.lease_seconds,
            limit=self.claim_limit,
        )
        if not claims:
            return 0
        held = set(claims)
        heartbeat = asyncio.create_task(self._heartbeat(held))
        try:
            events = await asyncio.to_thread(self._load, [c.event_pk for c in claims])
            await self._deliver(adapters, claims, events, held)
        except BaseException:
            await self._release(held)
            raise
        finally:
            heartbeat.cancel()
        return len(claims)

    async def _deliver(
        self,
        adapters: Mapping[str, Adapter],
        claims: Sequence[Claim],
        events: Mapping[str, Event],
        held: set[Claim],
    ) -> None:
        async def save(settled: send.Settled) -> None:
            await self.recorder.save(settled)
            held.difference_update(f.claim for f in settled.finishes)

        slots: dict[str, asyncio.Semaphore] = {}

        async def one(destination: str, batch: list[Claim]) -> None:
            slot = slots.setdefault(destination, asyncio.Semaphore(BATCHES_IN_FLIGHT))
            async with slot:
                await self._batch(adapters[destination], batch, events, save, held)

        batches = [one(destination, batch) for destination, batch in _batches(claims, adapters)]
        results = await asyncio.gather(*batches, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _batch(
        self,
        adapter: Adapter,
        claims: list[Claim],
        events: Mapping[str, Event],
        save: send.Save,
        held: set[Claim],
    ) -> None:
        """One destination's batch; a bug of ours fails its own work, never another's."""
        try:
            await self.sender.deliver(adapter, claims, events, save)
        except (SQLAlchemyError, OSError):
            raise  # the database: the round fails and hands back what it holds
        except Exception as exc:
            name = adapter.settings.name
            log.exception("worker: delivering to %s failed", name)
            metrics.ADAPTER_ERRORS.labels(destination=name, step="deliver").inc()
            now = datetime.now(UTC)
            reason = f"internal error: {type(exc).__name__}: {exc}"
            finishes = [outbox.Finish(c, DeliveryStatus.FAILED, now, reason) for c in claims]
            finishes = [f for f in finishes if f.claim in held]
            failed = {c.event_pk: Rejected(reason, "internal error") for c in claims}
            facts = health.facts(finishes, failed, events, None)
            await save(send.Settled(name, finishes, [], facts))

    async def _heartbeat(self, held: set[Claim]) -> None:
        """While the round runs, keep the lease of what it still holds (the worker is alive)."""
        lease = self.settings.delivery.lease_seconds
        while True:
            await asyncio.sleep(lease / HEARTBEATS_PER_LEASE)
            until = datetime.now(UTC) + timedelta(seconds=lease)
            try:
                await asyncio.to_thread(outbox.extend, self.engine, list(held), until=until)
            except Exception as exc:
                log.warning("worker: lease not extended (%s); it may run out", exc)

    async def _release(self, held: set[Claim]) -> None:
        if not held:
            return
        try:
            await asyncio.to_thread(outbox.release, self.engine, list(held), now=datetime.now(UTC))
        except Exception as exc:
            log.warning("worker: claims not handed back (%s); their lease returns them", exc)

    async def drain(self) -> None:
        """Deliver until nothing is due now (tests and the benchmark)."""
        while await self.run_once():
            pass

    async def _lane(self, index: int) -> None:
        while not self._stopping:
            try:
                claimed = await self.run_once()
            except Exception:  # the database went away: the claims were handed back
                log.exception("worker: delivery round failed; retrying after the poll interval")
                claimed = 0
            if claimed >= self.claim_limit or self._stopping:
                continue
            wait = await self._idle_wait()
            if self._stopping:  # stop() came while reading the next due time: it cancelled
                break  # only the idle lanes, so this one would wait out its grace period
            self._idle.add(index)
            try:
                await self.queue.wait(wait)
            finally:
                self._idle.discard(index)

    async def _idle_wait(self) -> float:
        poll = self.settings.delivery.sweep_interval_seconds
        try:
            due = await asyncio.to_thread(
                outbox.next_due, self.engine, destinations=self.adapters.keys()
            )
        except Exception:
            log.exception("worker: cannot read the next due time")
            return poll
        if due is None:
            return poll
        return max(min(poll, (due - datetime.now(UTC)).total_seconds()), 0.01)

    def _load(self, pks: list[str]) -> dict[str, Event]:
        """The claimed work's events, read without SQLite's write lock (`db.reader`)."""
        with db.reader(self.engine) as conn:
            if time.monotonic() - self._kinds_at > SOURCE_KINDS_TTL:
                self._kinds = load.source_kinds(conn, self.settings)
                self._kinds_at = time.monotonic()
            return load.load_events(conn, pks, kinds=self._kinds)


def _batches(
    claims: Sequence[Claim], adapters: Mapping[str, Adapter]
) -> list[tuple[str, list[Claim]]]:
    """Claims grouped per destination, cut to each adapter's batch size."""
    grouped: dict[str, list[Claim]] = {}
    for one in claims:
        grouped.setdefault(one.destination, []).append(one)
    batches = []
    for destination, group in grouped.items():
        size = adapters[destination].batch_size
        batches += [(destination, group[i : i + size]) for i in range(0, len(group), size)]
    return batches


class Recorder:
    """Makes settlements durable as they come: one write at a time, all that waits in it.

    An answer is saved within about one commit of its arrival, and answers arriving together
    share a transaction (a commit per request would cap unbatched destinations).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._waiting: list[tuple[send.Settled, asyncio.Future[None]]] = []
        self._writing: asyncio.Task[None] | None = None

    async def save(self, settled: send.Settled) -> None:
        """Return once `settled` is committed; raise what the database raised."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((settled, future))
        if self._writing is None or self._writing.done():
            self._writing = asyncio.create_task(self._write_waiting())
        await future

    async def close(self) -> None:
        if self._writing is not None:
            await asyncio.gather(self._writing, return_exceptions=True)

    async def _write_waiting(self) -> None:
        while self._waiting:
            group, self._waiting = self._waiting, []
            try:
                await asyncio.to_thread(_write, self.engine, [s for s, _ in group])
            except Exception as exc:
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for _, future in group:
                if not future.done():
                    future.set_result(None)


def _write(engine: Engine, group: list[send.Settled]) -> None:
    now = datetime.now(UTC)
    with engine.begin() as conn:
        outbox.finish(conn, [f for settled in group for f in settled.finishes], now)
        health.record(conn, ((s.destination, s.facts) for s in group), now)
        requests = [(settled.destination, sent) for settled in group for sent in settled.sent]
        track.record_all(conn, requests, now=now)
    for settled in group:
        for finish in settled.finishes:
            outcome = "retry" if finish.status == DeliveryStatus.PENDING else finish.status.value
            metrics.DELIVERIES.labels(settled.destination, outcome).inc()


def run_worker(settings: Settings) -> None:
    """The `firstparty worker` command: deliver until SIGTERM or SIGINT."""
    heap.limit_arenas()
    asyncio.run(_run(settings))


async def _run(settings: Settings) -> None:
    engine = db.create_engine(settings.database_url)
    waker = queue.make_queue(settings)
    destinations = DestinationBook(settings=settings, engine=engine)
    destinations.reload()
    adapters = destinations.deliverable()
    worker = Worker(settings=settings, engine=engine, adapters={}, queue=waker, book=destinations)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("worker: delivering to %s", ", ".join(adapters) or "no destinations")
    # Everything built so far (modules, settings, engine, adapters) lives as long as the process:
    # keep it out of the collector's full passes, which otherwise walk it every few rounds
    # (measured: ~50 ms per 2,000-event round, a sixth of the worker's CPU when batching).
    gc.collect()
    gc.freeze()
    await worker.start()
    evaluator = alerts_loop.Evaluator(settings=settings, engine=engine, book=destinations)
    alerting = asyncio.create_task(evaluator.run()) if settings.alerts.enabled else None
    # Audiences due on their schedule; every worker (and server) tries, a lease picks one.
    audiences = audience_service.Scheduler(settings=settings, engine=engine)
    scheduled = asyncio.create_task(audiences.run()) if settings.audiences else None
    # The platforms' verdicts on matching (Meta's EMQ, Google's match rate), a lease picks one.
    puller = verdicts.Puller(settings=settings, engine=engine, book=destinations)
    pulling = asyncio.create_task(puller.run())
    trimming = asyncio.create_task(heap.trimming())
    # Funnels' preset ranges computed off the request path; a lease per funnel picks one.
    refresher = funnel_rounds.Refresher(settings=settings, engine=engine)
    refreshing = asyncio.create_task(refresher.run())
    try:
        await stop.wait()
    finally:
        for task in (alerting, scheduled, pulling, trimming, refreshing):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await evaluator.close()
        await audiences.close()
        await puller.close()
        await refresher.close()
        await worker.stop()
        await waker.close()
        engine.dispose()


def main() -> None:
    """`python -m firstparty.delivery.worker`, with settings from the environment."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    run_worker(settings_mod.load())


if __name__ == "__main__":
    main()
