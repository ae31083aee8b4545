"""Running audiences: on a schedule (every process tries; a database lease lets one run each
audience at a time) and on demand (`firstparty audiences sync NAME`, the admin page's button).

`audience_schedule` holds, per audience, when it runs next and which process holds it until
when. A process takes an audience with one UPDATE that succeeds only when the lease is free (or
lapsed: its holder died) and, for a scheduled run, the audience is due; an on-demand run ignores
the due time but never the lease, so two runs of one audience never overlap.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from firstparty import rounds
from firstparty.audiences import registry
from firstparty.audiences.base import AudienceAdapter
from firstparty.audiences.definition import AudienceSettings
from firstparty.audiences.sync import RunResult, Syncer
from firstparty.delivery import send
from firstparty.errors import ConfigError
from firstparty.settings import Settings
from firstparty.store import db
from firstparty.store.models import audience_schedule

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
TICK_SECONDS = 30.0  # how often a process looks for a due audience
LEASE_SECONDS = 3600.0  # a run longer than this may be taken over (its holder is taken as dead)
LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)


class Busy(Exception):
    """Another process is running this audience now."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def holder_name() -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(4)}"


def find(settings: Settings, name: str) -> AudienceSettings:
    """The audience of this name, or a ConfigError listing those there are."""
    for audience in settings.audiences:
        if audience.name == name:
            return audience
    known = ", ".join(a.name for a in settings.audiences) or "none in the config file"
    raise ConfigError(f"no audience named {name!r} (audiences: {known})")


def adapters(settings: Settings) -> dict[str, AudienceAdapter]:
    """An adapter per audience destination that can send (its secrets set)."""
    return {
        d.name: registry.adapter_for(d)
        for d in settings.destinations
        if registry.is_audience(d) and d.name not in settings.misconfigured
    }


def take(
    engine: Engine, audience: AudienceSettings, *, holder: str, now: datetime, due_only: bool
) -> bool:
    """Hold the audience for one run, if free (and due, with `due_only`)."""
    c = audience_schedule.c
    row = {"audience": audience.name, "holder": "", "lease_until": LONG_AGO, "next_run_at": now}
    where = [c.audience == audience.name, c.lease_until <= now]
    if due_only:
        where.append(c.next_run_at <= now)
    with engine.begin() as conn:
        db.insert_ignore(conn, audience_schedule, [row])
        done = conn.execute(
            sa.update(audience_schedule)
            .where(*where)
            .values(holder=holder, lease_until=now + timedelta(seconds=LEASE_SECONDS))
        )
    return done.rowcount == 1


def release(engine: Engine, audience: AudienceSettings, *, holder: str, now: datetime) -> None:
    """Free the audience; it is due again `every_minutes` from now (on demand only: never)."""
    c = audience_schedule.c
    every = audience.every_minutes
    upcoming = now + (timedelta(minutes=every) if every else timedelta(days=36500))
    with engine.begin() as conn:
        conn.execute(
            sa.update(audience_schedule)
            .where(c.audience == audience.name, c.holder == holder)
            .values(holder="", lease_until=LONG_AGO, next_run_at=upcoming)
        )


async def sync_now(
    *,
    settings: Settings,
    engine: Engine,
    name: str,
    trigger: str,
    sender: send.Sender | None = None,
    clock: Clock = utcnow,
) -> list[RunResult]:
    """Run one audience now (the CLI and the admin page's button); `Busy` if it is running."""
    audience = find(settings, name)
    own = sender is None
    sender = sender or send.Sender(settings.delivery)
    try:
        results = await _run(settings, engine, audience, sender, holder_name(), clock, trigger)
    finally:
        if own:
            await sender.close()
    if results is None:
        raise Busy(f"audience {name!r} is being synced by another process; try again shortly")
    return results


async def _run(
    settings: Settings,
    engine: Engine,
    audience: AudienceSettings,
    sender: send.Sender,
    holder: str,
    clock: Clock,
    trigger: str,
) -> list[RunResult] | None:
    due_only = trigger == "schedule"
    taken = await asyncio.to_thread(
        take, engine, audience, holder=holder, now=clock(), due_only=due_only
    )
    if not taken:
        return None
    try:
        syncer = Syncer(engine=engine, sender=sender)
        return await syncer.run(audience, adapters(settings), trigger=trigger, now=clock())
    finally:
        await asyncio.to_thread(release, engine, audience, holder=holder, now=clock())


class Scheduler:
    """Runs each due audience (`every_minutes`), one process at a time per audience."""

    def __init__(self, *, settings: Settings, engine: Engine, clock: Clock = utcnow) -> None:
        self.settings = settings
        self.engine = engine
        self.clock = clock
        self.holder = holder_name()
        self.sender = send.Sender(settings.delivery)

    async def round(self) -> list[RunResult]:
        """Run the audiences due now that no other process holds."""
        done: list[RunResult] = []
        for audience in self.settings.audiences:
            if audience.every_minutes == 0 or not audience.destinations:
                continue
            ran = await _run(
                self.settings,
                self.engine,
                audience,
                self.sender,
                self.holder,
                self.clock,
                "schedule",
            )
            done += ran or []
        return done

    async def run(self, tick: float = TICK_SECONDS) -> None:
        """A round every `tick` seconds; a failing round is logged and tried again."""
        failed = "audiences: scheduled sync failed; retrying later"
        await rounds.every(tick, self.round, log=log, failed=failed)

    async def close(self) -> None:
        await self.sender.close()
