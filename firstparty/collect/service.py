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

from firstparty import metrics
from firstparty.collect import boundary, prepare, schema
from firstparty.collect.sources import SourceBook
from firstparty.collect.writer import GroupWriter, Stored
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
    try:
        item = _prepared(collector, arrival, event, annex)
        if _dropped(item):
            return _accepted(item, None)
        stored = await collector.writer.submit(item)
    except Exception as exc:
        raise boundary.answer(exc, source=arrival.source.name) from None
    if stored.queued:
        await collector.runtime.notifier.notify()
    return _accepted(item, stored)


def _prepared(
    collector: Collector,
    arrival: prepare.Arrival,
    event: schema.EventIn,
    annex: dict[str, Any] | None,
) -> prepare.Prepared:
    settings = collector.runtime.settings
    return prepare.prepare(
        event,
        arrival=arrival,
        limits=settings.collect,
        default_region=settings.otp.default_region,
        annex=annex,
    )


def _dropped(item: prepare.Prepared) -> bool:
    """A robot's event from a source that drops them (`bots = "drop"`): not stored."""
    return item.bot is not None and item.source.bots == "drop"


def _accepted(item: prepare.Prepared, stored: Stored | None) -> schema.Accepted:
    """The 202 for a stored event, or for one dropped as a robot's (`stored` None)."""
    for warning in item.warnings:
        field = ".".join(warning.field.split(".")[:2])
        metrics.INGEST_WARNINGS.labels(item.source.name, field).inc()
    warnings = [schema.ErrorDetail(w.field, w.message) for w in item.warnings]
    if item.bot and not (stored and stored.duplicate):
        action = "flagged" if stored else "dropped"
        metrics.INGEST_BOTS.labels(item.source.name, item.bot, action).inc()
    if stored is None:
        return schema.Accepted(
            True, item.pk, item.event_id, item.visitor_id, warnings=warnings, dropped="bot"
        )
    return schema.Accepted(
        True, stored.pk, item.event_id, item.visitor_id, stored.duplicate, warnings
    )


async def accept_batch(
    *,
    collector: Collector,
    arrival: prepare.Arrival,
    events: Sequence[Submitted | InputError],
) -> list[Outcome]:
    """Each event judged alone (one refused fails no other); outcomes in the events' order.

    An InputError among `events` (one the handler could not parse) is its own outcome. The
    events of a browser without a visitor cookie share the visitor minted for the request:
    they are written together, so that one visitor is created, first touch from the first.
    """
    if arrival.new_visitor:
        return await _together(collector, arrival, events)
    outcomes = await asyncio.gather(*(_outcome(collector, arrival, one) for one in events))
    return list(outcomes)


async def _together(
    collector: Collector, arrival: prepare.Arrival, events: Sequence[Submitted | InputError]
) -> list[Outcome]:
    source = arrival.source.name
    outcomes: list[Outcome | prepare.Prepared] = []
    for one in events:
        if isinstance(one, InputError):
            outcomes.append(one)
            continue
        try:
            outcomes.append(_prepared(collector, arrival, one.event, one.annex))
        except Exception as exc:
            outcomes.append(boundary.answer(exc, source=source))
    items = [o for o in outcomes if isinstance(o, prepare.Prepared) and not _dropped(o)]
    results = iter(await collector.writer.submit_together(items))
    done: list[Outcome] = []
    queued = False
    for outcome in outcomes:
        if not isinstance(outcome, prepare.Prepared):
            done.append(outcome)
        elif _dropped(outcome):
            done.append(_accepted(outcome, None))
        elif isinstance(stored := next(results), Exception):
            done.append(boundary.answer(stored, source=source))
        else:
            queued = queued or bool(stored.queued)
            done.append(_accepted(outcome, stored))
    if queued:
        await collector.runtime.notifier.notify()
    return done


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
