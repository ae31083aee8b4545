"""GA4 sessions kept server-side, per visitor, for pages without a `_ga_<container>` cookie.

Google Analytics ends a session after 30 minutes without activity; its `session_id` is the
session's start in Unix seconds and its `session_number` counts the visitor's sessions
(destinations.md §6, "GA4 sessions"). A browser event's stored context gets both, as strings:
`context["session_id"]`, `context["session_number"]`. Time is the server's receive time. The
state lives on the visitor row, read and written with it by the group writer (no extra round
trip); activity is the visitor's `last_seen_at`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from firstparty.collect.prepare import Prepared

TIMEOUT = timedelta(minutes=30)


@dataclass
class State:
    """A visitor's current session: when it started, its number, the last activity seen."""

    started_at: datetime | None = None
    number: int = 0
    last_seen_at: datetime | None = None

    @classmethod
    def of(cls, row: Any) -> State:
        """From a visitors row (None: a visitor not stored yet)."""
        if row is None:
            return cls()
        return cls(row.session_started_at, row.session_number or 0, row.last_seen_at)

    def see(self, at: datetime) -> dict[str, str]:
        """Activity at `at`: a new session after the timeout; the fields for the event."""
        idle = self.last_seen_at is None or at - self.last_seen_at > TIMEOUT
        if self.started_at is None or idle:
            self.started_at, self.number = at, self.number + 1
        self.last_seen_at = max(at, self.last_seen_at or at)
        return {
            "session_id": str(int(self.started_at.timestamp())),
            "session_number": str(self.number),
        }


def follow(items: Sequence[Prepared], states: dict[str, State]) -> dict[str, dict[str, str]]:
    """Each browser event's session fields (event pk -> fields), moving `states` on in order."""
    fields: dict[str, dict[str, str]] = {}
    for item in items:
        if item.visitor_id and item.source.kind == "browser":
            fields[item.pk] = states[item.visitor_id].see(item.received_at)
    return fields
