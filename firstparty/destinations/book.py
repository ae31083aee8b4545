"""The destinations in force in one process: the config file's and the enabled stored ones.

Every server and worker process holds one book and calls `reload()` every few seconds
(`app._destinations_refresh`, and the worker before a round): a cheap stamp of the table is read,
and only when it changed are the stored destinations read again and their adapters rebuilt.
The config file's destinations never change while the process runs and win over a stored one of
the same name. Readers take `adapters` (a dict replaced whole, never changed in place) on each
use, so an event is routed, and work is claimed, with the set of that moment.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import NamedTuple

from sqlalchemy.engine import Engine

from firstparty.destinations import registry, stored
from firstparty.destinations.base import Adapter
from firstparty.settings import Settings

# How often a process looks at the table (the worker, before a round; the server, in a loop).
REFRESH_SECONDS = 2.0


class Route(NamedTuple):
    """Where an event goes: the destinations that take it, and whether one of them takes it as
    a conversion (`DestinationSettings.is_conversion`), the rule the reports count by."""

    destinations: list[str]
    conversion: bool


class DestinationBook:
    """Destination name -> adapter, with what keeps some of them from sending."""

    def __init__(
        self, *, settings: Settings, engine: Engine, environ: Mapping[str, str] | None = None
    ) -> None:
        self._settings = settings
        self._engine = engine
        self._environ = environ
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._checked_at = float("-inf")
        self.config_names = frozenset(d.name for d in settings.destinations)
        self._config = registry.adapters(settings.destinations)
        self._config_problems = {
            name: "environment variable(s) not set: " + ", ".join(unset)
            for name, unset in settings.misconfigured.items()
        }
        self.adapters: dict[str, Adapter] = dict(self._config)
        self.problems: dict[str, str] = dict(self._config_problems)

    def reload(self) -> bool:
        """Read the stored destinations again if the table changed; whether it had."""
        with self._lock:
            self._checked_at = time.monotonic()
            with self._engine.connect() as conn:
                now = stored.stamp(conn)
            if now == self._stamp:
                return False
            loaded = stored.load(
                settings=self._settings, engine=self._engine, environ=self._environ
            )
            found = dict(self._config)
            kept = self.adapters
            for one in loaded:
                if one.settings is None:
                    continue
                same = kept.get(one.name)
                reuse = same is not None and same.settings == one.settings
                found[one.name] = same if reuse and same else registry.adapter_for(one.settings)
            problems = dict(self._config_problems)
            problems.update({o.name: "; ".join(o.problems) for o in loaded if o.problems})
            self.adapters, self.problems, self._stamp = found, problems, now
            return True

    def reload_if_due(self, interval: float = REFRESH_SECONDS) -> bool:
        """`reload()` when the last look is older than `interval` seconds."""
        if time.monotonic() - self._checked_at < interval:
            return False
        return self.reload()

    def deliverable(self) -> dict[str, Adapter]:
        """The adapters a worker may send with now (not those that cannot: their events wait)."""
        problems = self.problems
        return {name: a for name, a in self.adapters.items() if name not in problems}

    def route(self, event_type: str, name: str, bot: bool) -> list[str]:
        """The destinations that take this event, for its outbox rows."""
        return [n for n, a in self.adapters.items() if a.wants(event_type, name, bot=bot)]

    def plan(self, event_type: str, name: str, bot: bool) -> Route:
        """`route`, and whether the event is a conversion for one of those destinations."""
        adapters = self.adapters
        taking = [n for n, a in adapters.items() if a.wants(event_type, name, bot=bot)]
        conversion = any(adapters[n].settings.is_conversion(name) for n in taking)
        return Route(taking, conversion)
