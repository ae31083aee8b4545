"""What an audience holds now, without sending anything: its size, identifier coverage per
destination, a sample of member keys (ids only, never a hash or clear data), and exports in
each platform's upload format."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.engine import Engine

from firstparty.audiences import members, registry, service, sync
from firstparty.audiences.base import AudienceAdapter, Member
from firstparty.audiences.definition import AudienceSettings
from firstparty.errors import ConfigError
from firstparty.settings import Settings

SAMPLE = 10
FORMATS = ("meta", "google", "tiktok", "csv")


@dataclass(frozen=True)
class Coverage:
    """One destination's view of the audience: who it can match, by identifier."""

    destination: str
    type: str
    usable: int  # consented members carrying at least one identifier it matches on
    by_identifier: dict[str, int]
    warning: str | None


@dataclass(frozen=True)
class Preview:
    audience: AudienceSettings
    size: int  # people matching the rules
    consented: int  # of whom ad platforms may get
    coverage: list[Coverage] = field(default_factory=list)
    sample: list[str] = field(default_factory=list)  # member keys


def preview(settings: Settings, engine: Engine, *, name: str, now: datetime) -> Preview:
    """The audience now, as a sync would see it (blocking: run it in a thread)."""
    audience = service.find(settings, name)
    planned = sync.plan(engine, audience, now=now)
    found = service.adapters(settings)
    coverage = [_coverage(found[d], planned.consented) for d in audience.destinations if d in found]
    sample = sorted(m.key for m in planned.consented)[:SAMPLE]
    return Preview(audience, planned.size, len(planned.consented), coverage, sample)


def _coverage(adapter: AudienceAdapter, consented: list[Member]) -> Coverage:
    usable = [m for m in consented if adapter.usable(m)]
    counts = {
        key: sum(1 for m in usable if m.identifiers.get(key)) for key in adapter.identifier_keys
    }
    warning = sync.minimum_warning(adapter, len(usable))
    return Coverage(adapter.settings.name, adapter.type, len(usable), counts, warning)


def export_adapter(settings: Settings, audience: AudienceSettings, fmt: str) -> AudienceAdapter:
    """An adapter of the platform named by `fmt` (`meta` for meta_custom_audience, ...): the
    audience's own destination of that platform, else any configured one."""
    found = service.adapters(settings)
    ordered = [found[d] for d in audience.destinations if d in found] + list(found.values())
    for adapter in ordered:
        if adapter.type.split("_", 1)[0] == fmt:
            return adapter
    kinds = [kind for kind in registry.ADAPTERS if kind.split("_", 1)[0] == fmt]
    wanted = kinds[0] if kinds else f"a {fmt} audience type"
    raise ConfigError(
        f"--format {fmt}: configure a [[destinations]] entry of type {wanted} "
        "(its settings shape the file), or use --format csv"
    )


def export(
    settings: Settings, engine: Engine, *, name: str, fmt: str, now: datetime
) -> tuple[str, int]:
    """The consented members as CSV in the format asked for; the text and the member count."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}")
    audience = service.find(settings, name)
    adapter = None if fmt == "csv" else export_adapter(settings, audience, fmt)
    consented = sync.plan(engine, audience, now=now).consented
    if adapter is None:
        keys = sorted({k for m in consented for k in members.hashed(m.identifiers)})
        header = ["member_key", *keys]
        rows = [
            [m.key, *(members.hashed(m.identifiers).get(k, "") for k in keys)] for m in consented
        ]
    else:
        chosen = [m for m in consented if adapter.usable(m)]
        header, rows = adapter.export(chosen)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue(), len(rows)
