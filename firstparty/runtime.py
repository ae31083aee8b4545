"""What a running server or worker holds: settings, the database engine, adapters, the notifier."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy.engine import Engine

from firstparty.destinations.base import Adapter
from firstparty.settings import Settings


class Notifier(Protocol):
    """Wakes delivery workers when new work is committed (Redis, or in-process when embedded)."""

    async def notify(self) -> None: ...

    async def ready(self) -> bool: ...


class _Silent:
    """Until the delivery queue is set up at start-up."""

    async def notify(self) -> None:
        return None

    async def ready(self) -> bool:
        return True


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    adapters: dict[str, Adapter] = field(default_factory=dict)
    notifier: Notifier = field(default_factory=_Silent)
