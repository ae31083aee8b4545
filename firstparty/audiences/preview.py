"""What an audience holds now, without sending anything: its size, identifier coverage per
destination, a sample of member keys (ids only, never a hash or clear data), and exports in
each platform's upload format."""

from __future__ import annotations

import csv
from collections.abc import Iterator, Set
from dataclasses import dataclass, field
from datetime import datetime
from typing import TextIO

from sqlalchemy.engine import Engine

from firstparty.audiences import members, registry, service, sync
from firstparty.audiences.base import AudienceAdapter, ExportFile, Member, present_keys
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
    """The audience now, as a sync would see it (blocking: run it in a thread). The members are
    counted as they are read, never held: the sample is the first keys, which `members.matching`
    gives in ascending order."""
    audience = service.find(settings, name)
    found = service.adapters(settings)
    counts = [_Counts(found[d]) for d in audience.destinations if d in found]
    size = consented = 0
    sample: list[str] = []
    for member in members.matching(engine, audience, now=now):
        size += 1
        if not members.consented(member):
            continue
        consented += 1
        if len(sample) < SAMPLE:
            sample.append(member.key)
        for one in counts:
            one.take(member)
    return Preview(audience, size, consented, [one.coverage() for one in counts], sample)


class _Counts:
    """One destination's coverage, counted member by member."""

    def __init__(self, adapter: AudienceAdapter) -> None:
        self.adapter = adapter
        self.usable = 0
        self.by_identifier = dict.fromkeys(adapter.identifier_keys, 0)

    def take(self, member: Member) -> None:
        if not self.adapter.usable(member):
            return
        self.usable += 1
        for key in self.by_identifier:
            self.by_identifier[key] += bool(member.identifiers.get(key))

    def coverage(self) -> Coverage:
        adapter = self.adapter
        warning = sync.minimum_warning(adapter, self.usable)
        return Coverage(
            adapter.settings.name, adapter.type, self.usable, self.by_identifier, warning
        )


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
    settings: Settings, engine: Engine, *, name: str, fmt: str, now: datetime, out: TextIO
) -> int:
    """Writes the consented members to `out` as CSV in the format asked for; the rows written.
    Two passes over the members, none held: the first finds the identifier keys they carry (a
    file's columns), the second writes a row per member as it is read."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}")
    audience = service.find(settings, name)
    adapter = None if fmt == "csv" else export_adapter(settings, audience, fmt)
    if adapter is None:
        consented = _consented(engine, audience, now)
        file = _hashes_file({k for m in consented for k in members.hashed(m.identifiers)})
    else:
        file = adapter.export_file(present_keys(adapter, _consented(engine, audience, now)))
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(file.header)
    count = 0
    for member in _consented(engine, audience, now):
        if (row := file.row(member)) is not None:
            writer.writerow(row)
            count += 1
    return count


def _consented(engine: Engine, audience: AudienceSettings, now: datetime) -> Iterator[Member]:
    """The members ad platforms may get, as `members.matching` reads them."""
    return filter(members.consented, members.matching(engine, audience, now=now))


def _hashes_file(present: Set[str]) -> ExportFile:
    """`--format csv`: each member's key and every hash it carries, one column per key."""
    keys = sorted(present)

    def row(m: Member) -> list[str]:
        hashes = members.hashed(m.identifiers)
        return [m.key, *(hashes.get(k, "") for k in keys)]

    return ExportFile(["member_key", *keys], row)
