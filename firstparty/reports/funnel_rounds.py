"""Funnels computed off the request path, and what the funnel page shows.

Every `TICK_SECONDS` each server and worker process runs a round (`Refresher.round`): a funnel
is due when its schedule says so (`reports.funnel_refresh_minutes` after its last pass, or at
once after **Recompute now**), or when a preset range has no kept result for the funnel's
current definition in the `reports.time_zone` zone, or covers other days than today's (midnight
passed). The process that takes the funnel's lease (`funnel_store.take`) computes every preset
range in one pass over the events of their union (`funnels.compute_many`), at most
`ROUND_MAX_ROWS` step events, in a thread, and keeps the results (`funnel_store.store`).

The page (`view`) shows the kept result of a preset range in the default zone over all sources,
with when it was computed; none kept yet, it says so and when the next round comes. Any other
period (a custom range, one source, another zone) is counted on the page on at most
`funnels.MAX_ROWS` step events, as before, and says when it is capped: such periods are as many
as the viewers make, so keeping them would be a cache nobody reads twice, and a queued job would
leave the viewer waiting on a page that cannot say when; a preset covers the usual questions.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from firstparty import rounds
from firstparty.reports import funnel_store, funnels
from firstparty.reports import period as period_mod
from firstparty.reports.funnel_spec import Funnel
from firstparty.reports.period import Period, Preset
from firstparty.settings import Settings

log = logging.getLogger(__name__)

TICK_SECONDS = 60.0
ROUND_MAX_ROWS = 1_000_000  # 25-35 s on SQLite at 25-35 us a row, in the background
PRESETS = tuple(p for p in Preset if p is not Preset.CUSTOM)

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Freshness(StrEnum):
    """Where the numbers on a funnel page come from."""

    KEPT = "kept"  # computed by a round, shown with its time
    PENDING = "pending"  # a preset range no round has computed yet for this definition
    ON_PAGE = "on_page"  # another period: counted now, on at most funnels.MAX_ROWS events


@dataclass(frozen=True)
class View:
    """What the funnel page shows: the result (none while pending) and where it comes from."""

    freshness: Freshness
    result: funnels.FunnelResult | None
    kept: funnel_store.Stored | None = None
    next_round: datetime | None = None  # when a round next computes this funnel
    running: bool = False  # a process computes it now


@dataclass(frozen=True)
class Refreshed:
    """One funnel's pass in a round."""

    funnel: str
    rows_read: int
    capped: bool
    seconds: float


def kept_here(settings: Settings, period: Period) -> bool:
    """Whether rounds keep this period's result: a preset, all sources, the default zone."""
    return (
        period.preset is not Preset.CUSTOM
        and period.source is None
        and period.zone_name == settings.reports.time_zone
    )


def view(
    *, settings: Settings, engine: Engine, funnel: Funnel, period: Period, now: datetime
) -> View:
    """The funnel page's numbers for this period (see the module's docstring)."""
    if not kept_here(settings, period):
        result = funnels.compute(engine, funnel=funnel, period=period)
        return View(Freshness.ON_PAGE, result)
    when = funnel_store.schedule(engine, name=funnel.name)
    running = when is not None and when.held_until > now
    kept = funnel_store.stored(engine, funnel=funnel, period=period)
    if kept is None:
        return View(
            Freshness.PENDING,
            None,
            next_round=now + timedelta(seconds=TICK_SECONDS),
            running=running,
        )
    due = when.next_run_at if when is not None else now
    upcoming = due if due > now else now + timedelta(seconds=TICK_SECONDS)
    return View(Freshness.KEPT, kept.result, kept, next_round=upcoming, running=running)


def listing(
    *, settings: Settings, engine: Engine, period: Period
) -> list[tuple[Funnel, Freshness, datetime | None]]:
    """Every funnel, where its numbers for the period come from, and when they were computed."""
    found = funnels.all_funnels(settings, engine)
    if not kept_here(settings, period):
        return [(funnel, Freshness.ON_PAGE, None) for funnel in found]
    times = funnel_store.computed_at(engine, period=period)
    shown = []
    for funnel in found:
        at = times.get((funnel.name, funnel_store.definition(funnel)))
        shown.append((funnel, Freshness.KEPT if at else Freshness.PENDING, at))
    return shown


def periods(settings: Settings, now: datetime) -> list[Period]:
    """The preset ranges as of now, in the default zone, over all sources."""
    zone = settings.reports.time_zone
    return [period_mod.parse({"range": p.value}, default_zone=zone, now=now) for p in PRESETS]


def due(
    engine: Engine, *, funnel: Funnel, wanted: list[Period], now: datetime
) -> tuple[bool, datetime | None]:
    """Whether the funnel is due now, and its schedule's `next_run_at` as read (None: no row)."""
    when = funnel_store.schedule(engine, name=funnel.name)
    seen = None if when is None else when.next_run_at
    if when is not None and when.held_until > now:
        return False, seen
    zone = wanted[0].zone_name
    have = funnel_store.covered(engine, funnel=funnel, zone=zone)
    missing = any(have.get(p.preset.value) != (p.first, p.last) for p in wanted)
    return missing or seen is None or seen <= now, seen


class Refresher:
    """Computes due funnels, one process per funnel at a time; `clock` is injectable."""

    def __init__(self, *, settings: Settings, engine: Engine, clock: Clock = utcnow) -> None:
        self.settings = settings
        self.engine = engine
        self.clock = clock
        self.holder = f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(4)}"
        self._stopping = threading.Event()
        self._pass: asyncio.Future[Refreshed | None] | None = None

    async def round(self) -> list[Refreshed]:
        """Compute the funnels due now that no other process holds."""
        found = await asyncio.to_thread(funnels.all_funnels, self.settings, self.engine)
        done = []
        for funnel in found:
            if self._stopping.is_set():
                break
            self._pass = asyncio.ensure_future(asyncio.to_thread(self._refresh, funnel))
            try:
                refreshed = await asyncio.shield(self._pass)
            except SQLAlchemyError:  # this funnel stays due; the others still get their turn
                log.warning("funnels: %s not computed; retrying later", funnel.name, exc_info=True)
                continue
            if refreshed is not None:
                done.append(refreshed)
        return done

    def _refresh(self, funnel: Funnel) -> Refreshed | None:
        now = self.clock()
        wanted = periods(self.settings, now)
        is_due, seen = due(self.engine, funnel=funnel, wanted=wanted, now=now)
        if not is_due:
            return None
        taken = funnel_store.take(
            self.engine, name=funnel.name, holder=self.holder, now=now, seen=seen
        )
        if not taken:
            return None
        every = timedelta(minutes=self.settings.reports.funnel_refresh_minutes)
        try:
            began = time.perf_counter()
            results = funnels.compute_many(
                self.engine,
                funnel=funnel,
                periods=wanted,
                max_rows=ROUND_MAX_ROWS,
                stop=self._stopping.is_set,
            )
            seconds = time.perf_counter() - began
            if self._stopping.is_set():  # cut short at shut-down: keep nothing half-read
                return None
            kept = list(zip(wanted, results, strict=True))
            funnel_store.store(
                self.engine, funnel=funnel, kept=kept, computed_at=now, seconds=seconds
            )
        finally:
            again = now + every if not self._stopping.is_set() else now
            funnel_store.release(
                self.engine, name=funnel.name, holder=self.holder, next_run_at=again
            )
        widest = max(results, key=lambda r: r.rows_read)
        log.info("funnel %s: %d events read in %.1f s", funnel.name, widest.rows_read, seconds)
        return Refreshed(funnel.name, widest.rows_read, any(r.capped for r in results), seconds)

    async def run(self, tick: float = TICK_SECONDS) -> None:
        """A round every `tick` seconds; a failing round is logged and tried again."""
        failed = "funnels: the round failed; retrying later"
        await rounds.every(tick, self.round, log=log, failed=failed)

    async def close(self) -> None:
        """Stop a pass under way (it keeps nothing) and wait for its thread to end."""
        self._stopping.set()
        if self._pass is not None and not self._pass.done():
            try:
                await self._pass
            except Exception:  # already logged by the round, or the database is going
                log.warning("funnels: the pass ended badly at shut-down", exc_info=True)
