"""Accepting events: the one service behind `/v1/events`, `/v1/batch` and `/segment/*`.

The HTTP handlers parse and answer. Here each event is prepared once, complete, stored through
the group writer, and the workers woken when it queued work; every failure is sorted at one
boundary (collect.boundary): 503 retry, 422 refused, or a logged and counted 500.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from firstparty.collect import boundary, prepare, schema
from firstparty.collect.sources import SourceBook
from firstparty.collect.writer import GroupWriter
from firstparty.errors import InputError, UnexpectedError
from firstparty.runtime import Runtime


@dataclass(frozen=True)
class Collector:
    """What accepting events needs: the runtime, the sources and the group writer."""

    runtime: Runtime
    sources: SourceBook
    writer: GroupWriter


class Submitted(msgspec.Struct, frozen=True, gc=False):
    """One event of a batch, with what to keep beside it in the stored request (`annex`)."""

    event: schema.EventIn
    annex: dict[str, Any] | None = None


Outcome = schema.Accepted | InputError | UnexpectedError


async def accept(
    *,
    collector: Collector,
    arrival: prepare.Arrival,
    event: schema.EventIn,
    annex: dict[str, Any] | None = None,
) -> schema.Accepted:
    """Store one event once its transaction commits.

    Raises InputError (4xx; 503 when storage is unavailable) or UnexpectedError (logged).
    `annex`: kept in the stored request beside the event (Segment: the message as sent).
    """
    settings = collector.runtime.settings
    try:
        item = prepare.prepare(
            event,
            arrival=arrival,
            limits=settings.collect,
            default_region=settings.otp.default_region,
            annex=annex,
        )
        stored = await collector.writer.submit(item)
    except Exception as exc:
        raise boundary.answer(exc, source=arrival.source.name) from None
    if stored.queued:
        await collector.runtime.notifier.notify()
    return schema.Accepted(True, stored.pk, item.event_id, item.visitor_id, stored.duplicate)


async def accept_batch(
    *,
    collector: Collector,
    arrival: prepare.Arrival,
    events: Sequence[Submitted | InputError],
) -> list[Outcome]:
    """Each event judged alone (one refused fails no other); outcomes in the events' order.

    An InputError among `events` (one the handler could not parse) is its own outcome.
    """
    outcomes = await asyncio.gather(*(_outcome(collector, arrival, one) for one in events))
    return list(outcomes)


async def _outcome(
    collector: Collector, arrival: prepare.Arrival, submitted: Submitted | InputError
) -> Outcome:
    if isinstance(submitted, InputError):
        return submitted
    try:
        return await accept(
            collector=collector, arrival=arrival, event=submitted.event, annex=submitted.annex
        )
    except (InputError, UnexpectedError) as exc:
        return exc
