"""Funnel results kept for the preset ranges, and each funnel's schedule (a lease).

`funnel_results` holds one row per funnel, definition, preset range and time zone: the counts
as JSON, the local days they cover, when and how long they took, the rows read and whether the
pass was capped. The definition is a hash of the steps (as printed) and the window, with the
counting rules' version (`SEMANTICS`): a funnel saved again with other steps, or changed in the
config file, finds no row for its new definition, so it never shows the old one's counts.

`funnel_schedule` says when each funnel is next due (`next_run_at`) and which process computes
it now (`holder` until `lease_until`); `take` is a compare-and-set on the `next_run_at` read, so
two processes that both saw a funnel due compute it once. Nothing here computes a funnel.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from firstparty.reports.funnel_spec import Funnel
from firstparty.reports.funnels import FunnelResult, StepResult
from firstparty.reports.period import Period
from firstparty.store import db
from firstparty.store.models import funnel_results, funnel_schedule

SEMANTICS = 1  # bump when the counting rules change: every stored result is then stale
LEASE_SECONDS = 30 * 60  # longer than a pass of ROUND_MAX_ROWS on any engine measured
LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)
KEEP_DAYS = 7  # rows of definitions no longer in use are deleted after this


@dataclass(frozen=True)
class Stored:
    """A result as kept: the counts, the days they cover, when and how they were computed."""

    result: FunnelResult
    first: date
    last: date
    computed_at: datetime
    seconds: float


@dataclass(frozen=True)
class Schedule:
    """When a funnel is next due; `held_until` is in the future while a process computes it."""

    next_run_at: datetime
    held_until: datetime


def definition(funnel: Funnel) -> str:
    """A hash of what the counts depend on: the steps, the window and the counting rules."""
    shape = {
        "steps": [str(step) for step in funnel.steps],
        "window_hours": funnel.window_hours,
        "semantics": SEMANTICS,
    }
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()


def stored(engine: Engine, *, funnel: Funnel, period: Period) -> Stored | None:
    """The kept result for this funnel's definition, the period's preset and zone."""
    r = funnel_results.c
    query = sa.select(funnel_results).where(
        r.funnel == funnel.name,
        r.definition == definition(funnel),
        r.range_key == period.preset.value,
        r.zone == period.zone_name,
    )
    with engine.connect() as conn:
        row = conn.execute(query).first()
    if row is None:
        return None
    result = _result(funnel, row.result, rows_read=row.rows_read, capped=row.capped)
    return Stored(result, row.first_day, row.last_day, row.computed_at, row.seconds)


def computed_at(engine: Engine, *, period: Period) -> dict[tuple[str, str], datetime]:
    """When each funnel definition's result for the period's preset and zone was computed."""
    r = funnel_results.c
    query = sa.select(r.funnel, r.definition, r.computed_at).where(
        r.range_key == period.preset.value, r.zone == period.zone_name
    )
    with engine.connect() as conn:
        return {(row.funnel, row.definition): row.computed_at for row in conn.execute(query)}


def covered(engine: Engine, *, funnel: Funnel, zone: str) -> dict[str, tuple[date, date]]:
    """Each preset kept for this definition and zone, with the days it covers."""
    r = funnel_results.c
    query = sa.select(r.range_key, r.first_day, r.last_day).where(
        r.funnel == funnel.name, r.definition == definition(funnel), r.zone == zone
    )
    with engine.connect() as conn:
        return {row.range_key: (row.first_day, row.last_day) for row in conn.execute(query)}


def store(
    engine: Engine,
    *,
    funnel: Funnel,
    kept: list[tuple[Period, FunnelResult]],
    computed_at: datetime,
    seconds: float,
) -> None:
    """Replace the kept results of these periods (each a preset, all in one zone)."""
    r = funnel_results.c
    key = definition(funnel)
    with engine.begin() as conn:
        for period, result in kept:
            conn.execute(
                sa.delete(funnel_results).where(
                    r.funnel == funnel.name,
                    r.definition == key,
                    r.range_key == period.preset.value,
                    r.zone == period.zone_name,
                )
            )
            conn.execute(
                sa.insert(funnel_results).values(
                    funnel=funnel.name,
                    definition=key,
                    range_key=period.preset.value,
                    zone=period.zone_name,
                    first_day=period.first,
                    last_day=period.last,
                    computed_at=computed_at,
                    seconds=seconds,
                    rows_read=result.rows_read,
                    capped=result.capped,
                    result=_as_json(result),
                )
            )
        # Other definitions of this funnel (it was changed) and funnels no longer defined: their
        # results, and their schedule (a defined funnel's next run is never that far behind; a
        # funnel defined again gets a new row at its first round).
        old = computed_at - timedelta(days=KEEP_DAYS)
        conn.execute(
            sa.delete(funnel_results).where(
                sa.or_(r.funnel == funnel.name, r.computed_at < old), r.definition != key
            )
        )
        s = funnel_schedule.c
        conn.execute(
            sa.delete(funnel_schedule).where(
                s.funnel != funnel.name, s.next_run_at < old, s.lease_until < old
            )
        )


def schedule(engine: Engine, *, name: str) -> Schedule | None:
    s = funnel_schedule.c
    query = sa.select(s.next_run_at, s.lease_until).where(s.funnel == name)
    with engine.connect() as conn:
        row = conn.execute(query).first()
    return None if row is None else Schedule(row.next_run_at, row.lease_until)


def request(engine: Engine, *, name: str, now: datetime) -> None:
    """Make the funnel due now (the page's Recompute button): the next round computes it."""
    s = funnel_schedule.c
    with engine.begin() as conn:
        _ensure(conn, name, now)
        conn.execute(sa.update(funnel_schedule).where(s.funnel == name).values(next_run_at=now))


def take(engine: Engine, *, name: str, holder: str, now: datetime, seen: datetime | None) -> bool:
    """Hold the funnel for one pass, if free and still due as seen (`seen`: the `next_run_at`
    read when judging it due; None when there was no row yet)."""
    s = funnel_schedule.c
    with engine.begin() as conn:
        _ensure(conn, name, now if seen is None else seen)
        done = conn.execute(
            sa.update(funnel_schedule)
            .where(
                s.funnel == name,
                s.lease_until <= now,
                s.next_run_at == (now if seen is None else seen),
            )
            .values(holder=holder, lease_until=now + timedelta(seconds=LEASE_SECONDS))
        )
    return done.rowcount == 1


def release(engine: Engine, *, name: str, holder: str, next_run_at: datetime) -> None:
    """Free the funnel; it is due again at `next_run_at` (a request made while it ran is met
    by that pass)."""
    s = funnel_schedule.c
    with engine.begin() as conn:
        conn.execute(
            sa.update(funnel_schedule)
            .where(s.funnel == name, s.holder == holder)
            .values(holder="", lease_until=LONG_AGO, next_run_at=next_run_at)
        )


def _ensure(conn: sa.Connection, name: str, next_run_at: datetime) -> None:
    row = {"funnel": name, "holder": "", "lease_until": LONG_AGO, "next_run_at": next_run_at}
    db.insert_ignore(conn, funnel_schedule, [row])


def _as_json(result: FunnelResult) -> dict[str, Any]:
    return {
        "steps": [
            {
                "people": s.people,
                "from_previous": s.from_previous,
                "from_first": s.from_first,
                "median_seconds": s.median_seconds,
            }
            for s in result.steps
        ],
        "by_channel": [[channel, counts] for channel, counts in result.by_channel],
    }


def _result(funnel: Funnel, kept: Any, *, rows_read: int, capped: bool) -> FunnelResult:
    steps = [
        StepResult(
            step,
            int(one["people"]),
            one["from_previous"],
            one["from_first"],
            one["median_seconds"],
        )
        for step, one in zip(funnel.steps, kept["steps"], strict=True)
    ]
    by_channel = [
        (str(channel), [int(n) for n in counts]) for channel, counts in kept["by_channel"]
    ]
    return FunnelResult(funnel, steps, by_channel, rows_read, capped)
