"""What the audiences did: their size over time, the last sync per destination and the members
each platform acknowledged, as small dataclasses for the admin page (reads only: the page shows
what the last run stored and computes no membership)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from firstparty.store.models import audience_members_acked, audience_runs, audience_sizes

POINTS = 60  # sizes shown per audience: the latest


@dataclass(frozen=True)
class SizePoint:
    at: datetime
    size: int  # people matching the rules
    consented: int  # of whom ad platforms may get


@dataclass(frozen=True)
class LastRun:
    """The latest sync of one audience on one destination."""

    trigger: str
    started_at: datetime
    finished_at: datetime | None
    size: int
    adds: int
    removes: int
    errors: int
    detail: str


def sizes(engine: Engine, audience: str, *, points: int = POINTS) -> list[SizePoint]:
    """The audience's latest recorded sizes, oldest first."""
    c = audience_sizes.c
    query = (
        sa.select(c.at, c.size, c.consented)
        .where(c.audience == audience)
        .order_by(c.at.desc())
        .limit(points)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return [SizePoint(r.at, r.size, r.consented) for r in reversed(rows)]


def last_runs(engine: Engine) -> dict[tuple[str, str], LastRun]:
    """The latest run per (audience, destination)."""
    c = audience_runs.c
    latest = sa.select(sa.func.max(c.id)).group_by(c.audience, c.destination)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(audience_runs).where(c.id.in_(latest))).all()
    return {
        (r.audience, r.destination): LastRun(
            r.trigger,
            r.started_at,
            r.finished_at,
            r.size,
            r.adds,
            r.removes,
            r.errors,
            r.detail or "",
        )
        for r in rows
    }


def held(engine: Engine) -> dict[tuple[str, str], int]:
    """Members each platform acknowledged, per (audience, destination): one count over the
    acknowledgements (as many rows as members, whatever the events)."""
    c = audience_members_acked.c
    query = sa.select(c.audience, c.destination, sa.func.count()).group_by(
        c.audience, c.destination
    )
    with engine.connect() as conn:
        return {(r[0], r[1]): int(r[2]) for r in conn.execute(query)}
