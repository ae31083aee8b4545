"""What a running server or worker holds, built once at start-up with its real parts."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Engine

from firstparty.delivery import queue
from firstparty.destinations.base import Adapter
from firstparty.settings import Settings


@dataclass(frozen=True)
class Runtime:
    """Settings, the database engine, one adapter per destination and the wake-up queue."""

    settings: Settings
    engine: Engine
    adapters: dict[str, Adapter]
    notifier: queue.Queue  # the API notifies through it; the embedded worker waits on it
