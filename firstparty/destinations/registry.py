"""The explicit registry of destination types. Only this module imports concrete adapters."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from firstparty.destinations.base import Adapter, DestinationSettings

ADAPTERS: dict[str, type[Adapter]] = {}


def register(adapter: type[Adapter]) -> type[Adapter]:
    ADAPTERS[adapter.type] = adapter
    return adapter


_loaded = False


def _load_builtins() -> None:
    # Every built-in registers through the same function a plug-in would use.
    global _loaded
    if not _loaded:
        _loaded = True
        for module in BUILTINS:
            __import__(f"firstparty.destinations.{module}")


# Modules of the built-in adapters, each calling `register` on import.
BUILTINS: list[str] = ["webhook", "fake", "meta_capi", "tiktok_events", "google_ads", "ga4_mp"]


def parse(raw: Any, index: int) -> DestinationSettings:
    """Validate one `[[destinations]]` entry against its type's settings schema."""
    where = f"destinations[{index}]"
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: must be a table")
    _load_builtins()
    kind = raw.get("type")
    if kind not in ADAPTERS:
        known = ", ".join(sorted(ADAPTERS)) or "none"
        raise ValueError(f"{where}.type: unknown destination type {kind!r} (known: {known})")
    try:
        return ADAPTERS[kind].settings_model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        message = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        raise ValueError(f"{where}.{key}: {message}") from None


def parse_all(raws: list[Any]) -> list[DestinationSettings]:
    parsed = [parse(raw, i) for i, raw in enumerate(raws)]
    names = [d.name for d in parsed]
    if len(set(names)) != len(names):
        raise ValueError("destination names must be unique")
    return parsed


def adapter_for(settings: DestinationSettings) -> Adapter:
    _load_builtins()
    return ADAPTERS[settings.type](settings)


def adapters(destinations: list[DestinationSettings]) -> dict[str, Adapter]:
    """One adapter per configured destination, keyed by destination name."""
    return {d.name: adapter_for(d) for d in destinations}
