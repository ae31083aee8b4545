"""Which click ids travel with a conversion: those of the visitor, or of all the person's devices.

Rule: every click id seen on any device of the person is handed to the adapter, each with the
time it was first seen; the adapter takes the most recent of each kind inside its platform's
window (`Event.click_id`). First touch stays on the visitor row for reports.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from firstparty.destinations.base import ClickId
from firstparty.store.models import click_ids, visitors


def visitor_ids_of(conn: Connection, *, visitor_id: str | None, user_id: str | None) -> list[str]:
    """The visitor itself plus every visitor linked to the same user."""
    found = {visitor_id} if visitor_id else set()
    if user_id:
        rows = conn.execute(sa.select(visitors.c.id).where(visitors.c.user_id == user_id))
        found.update(r.id for r in rows)
    return sorted(found)


def click_ids_for(
    conn: Connection, *, visitor_id: str | None, user_id: str | None
) -> list[ClickId]:
    """Click ids from the visitor and, when the person is known, all of their devices."""
    visitor_list = visitor_ids_of(conn, visitor_id=visitor_id, user_id=user_id)
    if not visitor_list:
        return []
    rows = conn.execute(
        sa.select(click_ids.c.kind, click_ids.c.value, click_ids.c.first_seen_at).where(
            click_ids.c.visitor_id.in_(visitor_list)
        )
    )
    return [ClickId(kind=r.kind, value=r.value, first_seen_at=r.first_seen_at) for r in rows]
