"""The explicit registry of destination types. Only this module imports concrete adapters.

A new adapter is one module beside the others and one entry in `BUILTINS`; the fake is listed
like every platform, so tests reach it through the same lookup as production.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from pydantic import ValidationError

from firstparty.audiences import registry as audience_registry
from firstparty.destinations import fake, ga4_mp, google_ads, meta_capi, tiktok_events, webhook
from firstparty.destinations.base import Adapter, DestinationSettings
from firstparty.settings import describe_errors

BUILTINS: tuple[type[Adapter], ...] = (
    webhook.WebhookAdapter,
    fake.FakeAdapter,
    meta_capi.MetaCapi,
    tiktok_events.TikTokEvents,
    google_ads.GoogleAds,
    ga4_mp.GA4MeasurementProtocol,
)


def by_type(adapters: Iterable[type[Adapter]]) -> dict[str, type[Adapter]]:
    """Adapter classes keyed by their `type`, the `[[destinations]]` entry's `type` value."""
    found: dict[str, type[Adapter]] = {}
    for adapter in adapters:
        if adapter.type in found:
            raise ValueError(f"two adapters claim destination type {adapter.type!r}")
        found[adapter.type] = adapter
    return found


ADAPTERS: Mapping[str, type[Adapter]] = MappingProxyType(by_type(BUILTINS))


def picker_order() -> list[str]:
    """Types as people pick one: the platforms by name, then the types made for tests."""
    return sorted(ADAPTERS, key=lambda kind: (ADAPTERS[kind].for_tests, kind))


def parse(raw: Any, index: int) -> DestinationSettings:
    """Validate one `[[destinations]]` entry against its type's settings schema."""
    where = f"destinations[{index}]"
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: must be a table")
    kind = raw.get("type")
    model = _settings_model(kind) if isinstance(kind, str) else None
    if model is None:
        known = ", ".join(sorted([*ADAPTERS, *audience_registry.ADAPTERS]))
        raise ValueError(f"{where}.type: unknown destination type {kind!r} (known: {known})")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ValueError("; ".join(describe_errors(exc, where))) from None


def _settings_model(kind: str) -> type[DestinationSettings] | None:
    """The settings schema of an event type, or of an audience type (`audiences.registry`)."""
    if kind in ADAPTERS:
        return ADAPTERS[kind].settings_model
    audience = audience_registry.ADAPTERS.get(kind)
    return audience.settings_model if audience is not None else None


def parse_all(raws: list[Any]) -> list[DestinationSettings]:
    parsed = [parse(raw, i) for i, raw in enumerate(raws)]
    names = [d.name for d in parsed]
    if len(set(names)) != len(names):
        raise ValueError("destination names must be unique")
    return parsed


def adapter_for(settings: DestinationSettings) -> Adapter:
    return ADAPTERS[settings.type](settings)


def adapters(destinations: list[DestinationSettings]) -> dict[str, Adapter]:
    """One adapter per configured destination that takes events, keyed by destination name.

    Audience destinations are left out: no event is ever routed to them (`audiences.sync`)."""
    return {d.name: adapter_for(d) for d in destinations if d.type in ADAPTERS}


def deliverable(
    adapters: Mapping[str, Adapter], misconfigured: Mapping[str, list[str]]
) -> dict[str, Adapter]:
    """The adapters a worker may send with: not those whose secrets are unset (their events
    are routed and wait, pending, until the server restarts with the secret)."""
    return {name: a for name, a in adapters.items() if name not in misconfigured}
