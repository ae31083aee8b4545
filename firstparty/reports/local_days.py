"""Rollup rows summed by local day in the database, not hour by hour in Python.

A report's local day is the UTC hours from the first whole hour at or after its midnight up to
the next day's (`Period.day_starts`): the hours `Period.day_of` puts on it. `summed` joins a
rollup table to a small table of the period's days, one row each (its index in `Period.days`
and its first and next hour), on that range of `hour`, the first column of every rollup's
primary key, and sums there: one row per day and dimension comes back instead of one per hour
and dimension (24 times fewer), with no datetime to decode. The days table is a UNION ALL of
one-row SELECTs because SQLite and MariaDB do not name the columns of a VALUES list.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import sqlalchemy as sa

from firstparty.reports.period import Period
from firstparty.store.models import UTCDateTime

LABEL = "local_day"  # the day's index in `Period.days`


def days(period: Period) -> sa.Subquery:
    """The period's days: (local_day, first_hour, next_hour)."""
    starts = period.day_starts
    rows = [
        sa.select(
            sa.literal(i, sa.Integer()).label(LABEL),
            sa.literal(first, UTCDateTime()).label("first_hour"),
            sa.literal(after, UTCDateTime()).label("next_hour"),
        )
        for i, (first, after) in enumerate(pairwise(starts))
    ]
    return sa.union_all(*rows).subquery("days")


def summed(
    table: sa.Table,
    period: Period,
    columns: Sequence[sa.ColumnElement[Any]],
    where: Sequence[sa.ColumnElement[bool]] = (),
) -> sa.Select[Any]:
    """`table`'s `count` over the period summed by local day (`local_day`) and `columns` (`n`)."""
    day = days(period)
    hour = table.c.hour
    within = sa.and_(hour >= day.c.first_hour, hour < day.c.next_hour)
    return (
        sa.select(day.c[LABEL], *columns, sa.func.sum(table.c.count).label("n"))
        .select_from(day.join(table, within))
        .where(*where)
        .group_by(day.c[LABEL], *columns)
    )
