"""Funnels: how many people went through ordered steps within a window, by first-touch channel.

Sources: the config file's `[[funnels]]` and the `funnels` table (saved from the admin UI);
`all_funnels` lists both, config first. `compute` reads the events of the period (plus one
window after it, for people who entered near its end) through the `occurred_at` index, streamed
in time order, only the columns it needs (the URL only when a step is a page, the properties
only when a step filters on them) and only robots-free rows of the steps' event names (and page
views when a step is a page). Cost: one pass over those events, memory per person entered, at
most `MAX_PEOPLE` people (later entrants are left out and the result says so) and `MAX_ROWS` rows
read (each joined to its visitor by primary key, for the person); then one read of the entrants'
visitors per 5,000, for their first-touch channel.

`compute_many` counts several periods (the background round's eight presets, see
`funnel_rounds`) in one pass over their union: each event is matched against the steps once,
then fed to every period it falls in. The pass costs about 25-70 us a row on SQLite and
PostgreSQL, most of it Python's per-row work (bench/funnel_round.py), so `MAX_ROWS` keeps a page
that counts on the spot (a custom range) under 500 ms: a period with more step events than that
is counted on its first `MAX_ROWS` (the page says so).

Semantics: a person is the verified user the event's visitor belongs to now, else the user the
event names (server sources), else its visitor: one person's devices make one journey.
A person enters at their first step-1 event in the period; each next step counts when it comes
after the previous one and within `window_hours` of the entry. An attempt that ran out of time
may start again at a later step-1 event; a person counts once, at the deepest step reached.
The median time between steps is over the people who made that step.
"""

from __future__ import annotations

import contextlib
import statistics
from collections import defaultdict
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from firstparty.reports import channels
from firstparty.reports.funnel_spec import Funnel, Step, parse
from firstparty.reports.period import Period
from firstparty.settings import Settings
from firstparty.store import db
from firstparty.store.models import events, funnel_results, funnel_schedule, funnels, visitors

MAX_PEOPLE = 200_000
MAX_ROWS = 10_000  # was 1,000,000: 25-50 s of reading; see the module's docstring
STREAM = 2000
IN_LIST = 5000


@dataclass(slots=True)
class _Attempt:
    visitor_id: str | None
    started: datetime
    times: list[datetime] = field(default_factory=list)  # when each step was reached


@dataclass(frozen=True)
class StepResult:
    step: Step
    people: int
    from_previous: float | None  # share of the previous step's people (None for step 1)
    from_first: float | None
    median_seconds: float | None  # median time from the previous step


@dataclass(frozen=True)
class FunnelResult:
    funnel: Funnel
    steps: list[StepResult]
    by_channel: list[tuple[str, list[int]]]  # channel, people per step
    rows_read: int
    capped: bool


def all_funnels(settings: Settings, engine: Engine) -> list[Funnel]:
    """The config file's funnels, then those saved from the UI (a saved one never shadows)."""
    found = [parse(f.name, f.steps, f.window_hours) for f in settings.funnels]
    taken = {f.name for f in found}
    with engine.connect() as conn:
        rows = conn.execute(sa.select(funnels).order_by(funnels.c.name))
        for row in rows:
            if row.name not in taken:
                found.append(parse(row.name, list(row.steps), row.window_hours, saved=True))
    return found


def save(engine: Engine, *, funnel: Funnel, now: datetime) -> None:
    """Store a funnel made in the UI (its name free: the caller checked)."""
    row = {
        "name": funnel.name,
        "steps": [str(step) for step in funnel.steps],
        "window_hours": funnel.window_hours,
        "created_at": now,
    }
    with engine.begin() as conn:
        conn.execute(sa.insert(funnels).values(**row))


def delete(engine: Engine, *, name: str) -> bool:
    """Delete a funnel saved in the UI, with its kept results and schedule."""
    with engine.begin() as conn:
        conn.execute(sa.delete(funnel_results).where(funnel_results.c.funnel == name))
        conn.execute(sa.delete(funnel_schedule).where(funnel_schedule.c.funnel == name))
        return conn.execute(sa.delete(funnels).where(funnels.c.name == name)).rowcount > 0


def compute(
    engine: Engine, *, funnel: Funnel, period: Period, max_rows: int = MAX_ROWS
) -> FunnelResult:
    """The funnel over the people who entered it in the period (on its first `max_rows` step
    events: `capped` says whether there were more)."""
    return compute_many(engine, funnel=funnel, periods=[period], max_rows=max_rows)[0]


def compute_many(
    engine: Engine,
    *,
    funnel: Funnel,
    periods: Sequence[Period],
    max_rows: int,
    stop: Callable[[], bool] = lambda: False,
) -> list[FunnelResult]:
    """The funnel for each period (one source or all, the same for every period) in one pass
    over the events of their union, at most `max_rows` of them; `stop()`, asked every `STREAM`
    rows, ends the pass early (each period not read to its end then says `capped`)."""
    window = timedelta(hours=funnel.window_hours)
    tallies = [_Tally(p.start, p.end, p.end + window) for p in periods]
    start, until = min(t.start for t in tallies), max(t.until for t in tallies)
    source = periods[0].source
    cut: datetime | None = None
    rows_read = 0
    with (
        db.reader(engine) as conn,
        contextlib.closing(_rows(conn, funnel, start, until, source)) as rows,
    ):
        for row in rows:
            rows_read += 1
            if rows_read > max_rows or (rows_read % STREAM == 0 and stop()):
                cut = row.occurred_at
                break
            _feed(funnel, tallies, row, window)
        channel_of = _channels(conn, {a.visitor_id for t in tallies for a in t.best.values()})
    results = []
    for tally in tallies:
        capped = tally.capped or (cut is not None and tally.until > cut)
        per_step, by_channel, medians = _tally(funnel, tally.best, channel_of)
        steps = _steps(funnel, per_step, medians)
        results.append(FunnelResult(funnel, steps, by_channel, tally.rows, capped))
    return results


@dataclass
class _Tally:
    """One period's pass: its bounds, the people's attempts, the rows it read."""

    start: datetime
    end: datetime  # entries before this only
    until: datetime  # end + window: later steps until this
    best: dict[str, _Attempt] = field(default_factory=dict)
    current: dict[str, _Attempt] = field(default_factory=dict)
    rows: int = 0
    capped: bool = False


def _feed(funnel: Funnel, tallies: Sequence[_Tally], row: Any, window: timedelta) -> None:
    """One event, into each period it falls in (which steps it matches is judged once)."""
    at = row.occurred_at
    person = row.linked or row.user_id or row.visitor_id
    props = row.properties if isinstance(row.properties, Mapping) else {}
    path = _path(row.url) if row.type == "page" else None
    hits = [s.matches(type_=row.type, name=row.name, path=path, props=props) for s in funnel.steps]
    for tally in tallies:
        if not tally.start <= at < tally.until:
            continue
        tally.rows += 1
        if person is None or not any(hits):
            continue
        entered = at < tally.end
        if person not in tally.current and len(tally.current) >= MAX_PEOPLE:
            tally.capped = tally.capped or entered
            continue
        _advance(tally, person, row.visitor_id, at, hits, window, entered)


def _rows(
    conn: Connection, funnel: Funnel, start: datetime, until: datetime, source: str | None
) -> Generator[Any, None, None]:
    names = sorted({s.target for s in funnel.steps if s.kind == "event"})
    # SQLite, without statistics, read the steps' names on (name, id) and sorted every step event
    # of all time by occurred_at before the first row (1.1 s at 200,000 events); through coalesce
    # it reads the period in time order and stops at the cap. A rare first step over a long period
    # then reads many rows for few matches; PostgreSQL's statistics choose for themselves.
    name = sa.func.coalesce(events.c.name, "") if conn.dialect.name == "sqlite" else events.c.name
    kinds = [sa.and_(events.c.type == "track", name.in_(names))] if names else []
    if any(s.kind == "page" for s in funnel.steps):
        kinds.append(events.c.type == "page")
    # Only the parts of the stored request a step reads, cut out by the database.
    pages = any(s.kind == "page" for s in funnel.steps)
    url = events.c.request["url"].as_string() if pages else sa.null()
    filtered = any(s.filters for s in funnel.steps)
    properties = events.c.request["properties"] if filtered else sa.null()
    query = (
        sa.select(
            events.c.occurred_at,
            events.c.visitor_id,
            events.c.user_id,
            events.c.type,
            events.c.name,
            url.label("url"),
            properties.label("properties"),
            visitors.c.user_id.label("linked"),
        )
        .select_from(events.outerjoin(visitors, visitors.c.id == events.c.visitor_id))
        .where(
            events.c.occurred_at >= start,
            events.c.occurred_at < until,
            events.c.bot.is_(None),
            sa.or_(*kinds),
        )
        .order_by(events.c.occurred_at, events.c.id)
    )
    if source:
        query = query.where(events.c.source == source)
    result = conn.execution_options(stream_results=True, yield_per=STREAM).execute(query)
    try:
        yield from result
    finally:  # a capped pass stops early: its server-side cursor is closed now
        result.close()


def _advance(
    tally: _Tally,
    person: str,
    visitor_id: str | None,
    at: datetime,
    hits: Sequence[bool],
    window: timedelta,
    entered: bool,
) -> None:
    current, best = tally.current, tally.best
    attempt = current.get(person)
    within = attempt is not None and at <= attempt.started + window
    if (
        attempt is not None
        and within
        and len(attempt.times) < len(hits)
        and hits[len(attempt.times)]
    ):
        attempt.times.append(at)
        _keep(best, person, attempt)
        return
    done = attempt is not None and len(attempt.times) == len(hits)
    free = attempt is None or (not done and at > attempt.started + window)
    if entered and free and hits[0]:
        current[person] = _Attempt(visitor_id, at, [at])
        _keep(best, person, current[person])


def _keep(best: dict[str, _Attempt], person: str, attempt: _Attempt) -> None:
    if person not in best or len(attempt.times) > len(best[person].times):
        best[person] = attempt


def _tally(
    funnel: Funnel, best: Mapping[str, _Attempt], channel_of: Mapping[str, str]
) -> tuple[list[int], list[tuple[str, list[int]]], list[float | None]]:
    size = len(funnel.steps)
    per_step = [0] * size
    gaps: list[list[float]] = [[] for _ in range(size)]
    by_channel: dict[str, list[int]] = defaultdict(lambda: [0] * size)
    for attempt in best.values():
        channel = channel_of.get(attempt.visitor_id or "", channels.Channel.UNKNOWN.value)
        for index, at in enumerate(attempt.times):
            per_step[index] += 1
            by_channel[channel][index] += 1
            if index:
                gaps[index].append((at - attempt.times[index - 1]).total_seconds())
    medians = [statistics.median(g) if g else None for g in gaps]
    ranked = sorted(by_channel.items(), key=lambda item: (-item[1][0], item[0]))
    return per_step, ranked, medians


def _channels(conn: Connection, visitor_ids: set[str | None]) -> dict[str, str]:
    """Each visitor's first-touch channel, read IN_LIST at a time."""
    ordered = sorted(v for v in visitor_ids if v)
    found: dict[str, str] = {}
    for start in range(0, len(ordered), IN_LIST):
        chunk = ordered[start : start + IN_LIST]
        query = sa.select(visitors.c.id, visitors.c.first_touch).where(visitors.c.id.in_(chunk))
        for row in conn.execute(query):
            touch = row.first_touch if isinstance(row.first_touch, Mapping) else {}
            found[row.id] = channels.channel_of(touch).value
    return found


def _steps(
    funnel: Funnel, per_step: Sequence[int], medians: Sequence[float | None]
) -> list[StepResult]:
    results = []
    for index, step in enumerate(funnel.steps):
        previous = per_step[index - 1] if index else None
        results.append(
            StepResult(
                step,
                per_step[index],
                per_step[index] / previous if previous else None,
                per_step[index] / per_step[0] if index and per_step[0] else None,
                medians[index],
            )
        )
    return results


def _path(url: object) -> str | None:
    if not isinstance(url, str):
        return None
    try:
        return urlsplit(url).path or "/"
    except ValueError:
        return None
