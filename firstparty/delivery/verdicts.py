"""The platforms' own verdicts on matching, pulled on a schedule and stored with their date.

Every `INTERVAL_SECONDS` each server and worker process tries the `verdicts` lease (a row of
`alert_lease`); the one that holds it asks every destination whose adapter has a verdict to give
(`Adapter.quality_requests`: Meta's Dataset Quality API, Google's requestStatus of the latest
accepted ingests) and keeps one row per destination, event name, metric and UTC day in
`platform_verdicts` (a second pull the same day replaces that day's value). The requests go
through the worker's `Sender` (tokens, timeouts) and into the outgoing-request log, secrets
masked. A refusal is logged and the previous verdict stays on the page with its older date.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import secrets
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from firstparty import rounds
from firstparty.delivery import boundary, send, track
from firstparty.delivery.outbox import DeliveryStatus
from firstparty.destinations.base import Adapter, Verdict
from firstparty.destinations.book import DestinationBook
from firstparty.errors import DeliveryError, RetryableError
from firstparty.settings import Settings
from firstparty.store.models import alert_lease, deliveries, platform_verdicts

log = logging.getLogger(__name__)

LEASE = "verdicts"
INTERVAL_SECONDS = 6 * 3600.0  # Meta recomputes Event Match Quality over 48 hours
RECENT_REQUESTS = 3  # Google: the latest accepted ingests asked about each pull

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Pulled:
    """What one round did: whether this process held the lease, verdicts kept, refusals."""

    pulled: bool
    stored: int = 0
    failed: int = 0


def take_lease(engine: Engine, *, holder: str, now: datetime, seconds: float) -> bool:
    """Hold the pull lease until now + seconds, if it is free or lapsed."""
    c = alert_lease.c
    with engine.begin() as conn:
        done = conn.execute(
            alert_lease.update()
            .where(c.name == LEASE, c.expires_at <= now)
            .values(holder=holder, expires_at=now + timedelta(seconds=seconds))
        )
    return done.rowcount == 1


def recent_request_ids(engine: Engine, destination: str, limit: int = RECENT_REQUESTS) -> list[str]:
    """The platform's ids of this destination's latest accepted requests."""
    d = deliveries.c
    query = (
        sa.select(d.request_id, sa.func.max(d.updated_at).label("at"))
        .where(d.destination == destination, d.request_id.is_not(None))
        .where(d.status.in_([DeliveryStatus.DELIVERED, DeliveryStatus.TEST]))
        .group_by(d.request_id)
        .order_by(sa.desc("at"))
        .limit(limit)
    )
    with engine.connect() as conn:
        return [str(r.request_id) for r in conn.execute(query)]


def store(engine: Engine, destination: str, found: list[Verdict], now: datetime) -> int:
    """Keep these verdicts as today's (UTC), replacing what today had for the same keys."""
    v = platform_verdicts.c
    latest = {(one.event_name, one.metric): one for one in found}
    with engine.begin() as conn:
        for (name, metric), one in sorted(latest.items()):
            conn.execute(
                platform_verdicts.delete().where(
                    v.destination == destination,
                    v.event_name == name,
                    v.metric == metric,
                    v.day == now.date(),
                )
            )
            conn.execute(
                platform_verdicts.insert().values(
                    destination=destination,
                    event_name=name[:128],
                    metric=metric[:32],
                    day=now.date(),
                    value=one.value[:64],
                    detail=one.detail[:2000],
                    fetched_at=now,
                )
            )
    return len(latest)


def asks(adapter: Adapter) -> bool:
    """Whether the adapter has a verdict to ask for (overrides `quality_requests`)."""
    return type(adapter).quality_requests is not Adapter.quality_requests


class Puller:
    """Pulls every destination's verdict once a lease; `clock` is injectable."""

    def __init__(
        self,
        *,
        settings: Settings,
        engine: Engine,
        book: DestinationBook | None = None,
        adapters: Mapping[str, Adapter] | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self.engine = engine
        self.book = book
        self._adapters = adapters
        self.clock = clock
        self.sender = send.Sender(settings.delivery)
        self.holder = f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(4)}"

    @property
    def adapters(self) -> Mapping[str, Adapter]:
        if self._adapters is not None:
            return self._adapters
        return self.book.deliverable() if self.book is not None else {}

    async def round(self) -> Pulled:
        now = self.clock()
        lease = INTERVAL_SECONDS * 0.9
        taken = await asyncio.to_thread(
            take_lease, self.engine, holder=self.holder, now=now, seconds=lease
        )
        if not taken:
            return Pulled(False)
        stored = failed = 0
        for name, adapter in sorted(self.adapters.items()):
            if not asks(adapter) or adapter.settings.dry_run:
                continue
            try:
                found = await self._pull(adapter, now)
            except DeliveryError as exc:
                log.warning("verdicts: %s refused: %s", name, exc)
                failed += 1
                continue
            stored += await asyncio.to_thread(store, self.engine, name, found, now)
        return Pulled(True, stored, failed)

    async def _pull(self, adapter: Adapter, now: datetime) -> list[Verdict]:
        name = adapter.settings.name

        async def logged(sent: track.Sent) -> None:
            await asyncio.to_thread(_record, self.engine, name, sent, self.clock())

        ids = await asyncio.to_thread(recent_request_ids, self.engine, name)
        token = (await self.sender.token_of(adapter, logged))[0] if adapter.needs_token else None
        with boundary.adapter_call(adapter, "quality_requests"):
            requests = adapter.quality_requests(token, ids)
        found: list[Verdict] = []
        for request in requests:
            response, sent = await self.sender.exchange(adapter, request)
            ok = response is not None and response.status == 200
            status = DeliveryStatus.DELIVERED if ok else DeliveryStatus.FAILED
            await logged(dataclasses.replace(sent, status=status))
            if response is None:
                raise RetryableError(
                    f"no answer: {track.redact(sent.error or '', request.secrets)}"
                )
            with boundary.adapter_call(adapter, "read_quality"):
                found += adapter.read_quality(request, response)
        return found

    async def run(self) -> None:
        """Every `INTERVAL_SECONDS`, a round; a failing round is logged and tried again."""
        failed = "verdicts pull failed; retrying at the next round"
        await rounds.every(INTERVAL_SECONDS, self.round, log=log, failed=failed)

    async def close(self) -> None:
        await self.sender.close()


def _record(engine: Engine, destination: str, sent: track.Sent, now: datetime) -> None:
    with engine.begin() as conn:
        track.record(conn, destination=destination, sent=sent, now=now)
