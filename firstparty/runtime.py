"""What a running server or worker holds, built once at start-up with its real parts."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Engine

from firstparty.delivery import queue
from firstparty.destinations.base import Adapter
from firstparty.destinations.book import DestinationBook
from firstparty.settings import Settings


@dataclass(frozen=True)
class Runtime:
    """Settings, the database engine, the destinations in force and the wake-up queue."""

    settings: Settings
    engine: Engine
    destinations: DestinationBook  # the config file's and the stored ones, reloaded (book.py)
    notifier: queue.Queue  # the API notifies through it; the embedded worker waits on it

    @property
    def adapters(self) -> dict[str, Adapter]:
        """One adapter per destination in force now (read it on each use: it changes)."""
        return self.destinations.adapters
