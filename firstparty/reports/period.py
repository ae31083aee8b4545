"""What a report covers: a range of local days in a time zone, and optionally one source.

Every report page and CSV takes the same query string: `range` (a preset, or `custom` with
`from` and `to`, ISO dates, both included), `source` and `tz` (an IANA name such as
Europe/Paris; the default is the `reports.time_zone` setting). `parse` turns it into a `Period`
or raises a 400 `InputError` naming the field, so a bad address is the viewer's error, never a
500. Service functions take the `Period` as a keyword argument.

The rollups count per UTC hour: a local day is the hours whose start falls on that day there.
That is exact for time zones a whole number of hours from UTC; for the :30 and :45 ones
(India, Nepal, parts of Australia) the first 30 or 45 minutes of a local day count in the
day before.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from firstparty.errors import FieldError, InputError

MAX_DAYS = 400  # the longest range: the default event retention
HOUR = timedelta(hours=1)
_ZONE = re.compile(r"^[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+){0,2}$")
_SOURCE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


class Preset(StrEnum):
    """The ranges offered in the filter form; `custom` takes `from` and `to`."""

    TODAY = "today"
    YESTERDAY = "yesterday"
    LAST_7 = "7d"
    LAST_14 = "14d"
    LAST_30 = "30d"
    LAST_90 = "90d"
    THIS_MONTH = "this_month"
    LAST_MONTH = "last_month"
    CUSTOM = "custom"


LABELS: dict[Preset, str] = {
    Preset.TODAY: "Today",
    Preset.YESTERDAY: "Yesterday",
    Preset.LAST_7: "Last 7 days",
    Preset.LAST_14: "Last 14 days",
    Preset.LAST_30: "Last 30 days",
    Preset.LAST_90: "Last 90 days",
    Preset.THIS_MONTH: "This month",
    Preset.LAST_MONTH: "Last month",
    Preset.CUSTOM: "Custom",
}
DEFAULT = Preset.LAST_14
_LAST_N = {Preset.LAST_7: 7, Preset.LAST_14: 14, Preset.LAST_30: 30, Preset.LAST_90: 90}


@dataclass(frozen=True)
class Period:
    """Local days `first` to `last` (both included) in `zone`; `source`: one source or all."""

    first: date
    last: date
    zone: ZoneInfo
    preset: Preset = DEFAULT
    source: str | None = None

    @property
    def days(self) -> list[date]:
        return [self.first + timedelta(days=i) for i in range((self.last - self.first).days + 1)]

    @property
    def start(self) -> datetime:
        """The first UTC hour counted: the first hour starting on or after local midnight."""
        return _hour_up(_midnight(self.first, self.zone))

    @property
    def end(self) -> datetime:
        """The first UTC hour no longer counted (exclusive)."""
        return _hour_up(_midnight(self.last + timedelta(days=1), self.zone))

    @property
    def zone_name(self) -> str:
        return self.zone.key

    def day_of(self, hour: datetime) -> date:
        """The local day an hour bucket (its start, UTC) counts in."""
        return hour.astimezone(self.zone).date()

    @property
    def day_starts(self) -> list[datetime]:
        """The first UTC hour counted in each day, then `end`: day i is the hours from
        `day_starts[i]` up to (without) `day_starts[i + 1]`, those `day_of` puts on it."""
        days = (self.last - self.first).days + 2
        return [_hour_up(_midnight(self.first + timedelta(days=i), self.zone)) for i in range(days)]

    def query(self) -> dict[str, str]:
        """The query-string fields that name this period (for links and the CSV downloads)."""
        fields = {"range": self.preset.value, "tz": self.zone_name}
        if self.preset is Preset.CUSTOM:
            fields |= {"from": self.first.isoformat(), "to": self.last.isoformat()}
        if self.source:
            fields["source"] = self.source
        return fields

    def describe(self) -> str:
        """In words: "Last 14 days (2026-11-16 to 2026-11-29, Europe/Paris)"."""
        span = self.first.isoformat()
        if self.last != self.first:
            span += f" to {self.last.isoformat()}"
        return f"{LABELS[self.preset]} ({span}, {self.zone_name})"


def parse(params: Mapping[str, str], *, default_zone: str, now: datetime) -> Period:
    """The period a report's query string asks for; InputError(400) naming a bad field."""
    zone = _zone(params.get("tz", "").strip() or default_zone)
    source = _source(params.get("source", "").strip())
    raw_range = params.get("range", "").strip()
    given = params.get("from", "").strip() or params.get("to", "").strip()
    preset = _preset(raw_range or (Preset.CUSTOM.value if given else DEFAULT.value))
    today = now.astimezone(zone).date()
    if preset is Preset.CUSTOM:
        first, last = _date(params, "from"), _date(params, "to")
        if last < first:
            raise _bad("to", "must be on or after from")
    else:
        first, last = _preset_days(preset, today)
    if (last - first).days + 1 > MAX_DAYS:
        raise _bad("to", f"a range covers at most {MAX_DAYS} days")
    return Period(first, last, zone, preset, source)


def zone(name: str) -> ZoneInfo:
    """An IANA time zone by name; ValueError when there is no such zone (settings use it)."""
    if len(name) > 64 or not _ZONE.match(name):
        raise ValueError(f"{name[:64]!r} is not an IANA time zone name such as Europe/Paris")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(
            f"unknown time zone {name!r}; use an IANA name such as Europe/Paris"
        ) from None


def _preset_days(preset: Preset, today: date) -> tuple[date, date]:
    if preset is Preset.TODAY:
        return today, today
    if preset is Preset.YESTERDAY:
        return today - timedelta(days=1), today - timedelta(days=1)
    if preset is Preset.THIS_MONTH:
        return today.replace(day=1), today
    if preset is Preset.LAST_MONTH:
        last = today.replace(day=1) - timedelta(days=1)
        return last.replace(day=1), last
    return today - timedelta(days=_LAST_N[preset] - 1), today


def _zone(name: str) -> ZoneInfo:
    try:
        return zone(name)
    except ValueError as exc:
        raise _bad("tz", str(exc)) from None


def _source(raw: str) -> str | None:
    if not raw:
        return None
    if not _SOURCE.match(raw):
        raise _bad("source", "must be a source name (letters, digits, _ . -, at most 64)")
    return raw


def _preset(raw: str) -> Preset:
    try:
        return Preset(raw)
    except ValueError:
        names = ", ".join(p.value for p in Preset)
        raise _bad("range", f"must be one of {names}") from None


def _date(params: Mapping[str, str], field: str) -> date:
    raw = params.get(field, "").strip()
    if not raw:
        raise _bad(field, "is required for a custom range (YYYY-MM-DD)")
    try:
        if len(raw) != 10:
            raise ValueError(raw)
        value = date.fromisoformat(raw)
    except ValueError:
        raise _bad(field, "must be a date such as 2026-11-29") from None
    if value.year < 2000 or value.year > 2999:
        raise _bad(field, "must be a date between the years 2000 and 2999")
    return value


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(), tzinfo=zone).astimezone(UTC)


def _hour_up(moment: datetime) -> datetime:
    """The first whole UTC hour at or after `moment`."""
    floor = moment.replace(minute=0, second=0, microsecond=0)
    return floor if floor == moment else floor + HOUR


def _bad(field: str, message: str) -> InputError:
    return InputError(400, "bad report query", [FieldError(field, message)])
