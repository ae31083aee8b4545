"""The explicit registry of audience destination types (`[[destinations]]` entries whose type is
an audience platform's). Only this module imports concrete audience adapters.

Entries of these types are parsed by `destinations.registry` like any destination, but they are
never given events: `destinations.registry.adapters` leaves them out, so the outbox routes
nothing to them; the audience sync (`sync.py`) alone uses them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

from firstparty.audiences.base import AudienceAdapter
from firstparty.audiences.platforms import google, meta, tiktok
from firstparty.destinations.base import DestinationSettings

BUILTINS: tuple[type[AudienceAdapter], ...] = (
    meta.MetaCustomAudience,
    google.GoogleCustomerMatch,
    tiktok.TikTokAudience,
)


def by_type(adapters: Iterable[type[AudienceAdapter]]) -> dict[str, type[AudienceAdapter]]:
    """Adapter classes keyed by their `type`."""
    found: dict[str, type[AudienceAdapter]] = {}
    for adapter in adapters:
        if adapter.type in found:
            raise ValueError(f"two audience adapters claim destination type {adapter.type!r}")
        found[adapter.type] = adapter
    return found


ADAPTERS: Mapping[str, type[AudienceAdapter]] = MappingProxyType(by_type(BUILTINS))


def is_audience(settings: DestinationSettings) -> bool:
    return settings.type in ADAPTERS


def adapter_for(settings: DestinationSettings) -> AudienceAdapter:
    return ADAPTERS[settings.type](settings)
