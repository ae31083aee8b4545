"""The report period: presets in the viewer's time zone, custom ranges, and the 400s."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from firstparty.errors import InputError
from firstparty.reports import period

# 23:30 UTC on 29 November: already 30 November in Paris (+1), still the 29th in New York.
NOW = datetime(2026, 11, 29, 23, 30, tzinfo=UTC)


def parse(**params: str) -> period.Period:
    return period.parse(params, default_zone="UTC", now=NOW)


@pytest.mark.parametrize(
    ("preset", "tz", "first", "last"),
    [
        ("today", "UTC", date(2026, 11, 29), date(2026, 11, 29)),
        ("today", "Europe/Paris", date(2026, 11, 30), date(2026, 11, 30)),
        ("yesterday", "Europe/Paris", date(2026, 11, 29), date(2026, 11, 29)),
        ("7d", "UTC", date(2026, 11, 23), date(2026, 11, 29)),
        ("14d", "America/New_York", date(2026, 11, 16), date(2026, 11, 29)),
        ("30d", "UTC", date(2026, 10, 31), date(2026, 11, 29)),
        ("90d", "UTC", date(2026, 9, 1), date(2026, 11, 29)),
        ("this_month", "Europe/Paris", date(2026, 11, 1), date(2026, 11, 30)),
        ("last_month", "UTC", date(2026, 10, 1), date(2026, 10, 31)),
        ("last_month", "Asia/Tokyo", date(2026, 10, 1), date(2026, 10, 31)),
    ],
)
def test_presets_are_local_days(preset: str, tz: str, first: date, last: date) -> None:
    chosen = parse(range=preset, tz=tz)
    assert (chosen.first, chosen.last, chosen.zone_name) == (first, last, tz)
    assert chosen.days[0] == first and chosen.days[-1] == last


def test_the_default_is_the_last_14_days_in_the_settings_zone() -> None:
    chosen = period.parse({}, default_zone="Europe/Paris", now=NOW)
    assert chosen.preset is period.Preset.LAST_14 and chosen.zone_name == "Europe/Paris"
    assert (chosen.first, chosen.last) == (date(2026, 11, 17), date(2026, 11, 30))


def test_custom_range_and_its_utc_hours() -> None:
    chosen = parse(**{"from": "2026-03-28", "to": "2026-03-29", "tz": "Europe/Paris"})
    assert chosen.preset is period.Preset.CUSTOM and len(chosen.days) == 2
    # Paris is +1 until 02:00 on 29 March, +2 after: the range is 47 hours long.
    assert chosen.start == datetime(2026, 3, 27, 23, tzinfo=UTC)
    assert chosen.end == datetime(2026, 3, 29, 22, tzinfo=UTC)
    assert chosen.day_of(datetime(2026, 3, 28, 22, tzinfo=UTC)) == date(2026, 3, 28)
    assert chosen.day_of(datetime(2026, 3, 28, 23, tzinfo=UTC)) == date(2026, 3, 29)
    assert chosen.query() == {
        "range": "custom",
        "tz": "Europe/Paris",
        "from": "2026-03-28",
        "to": "2026-03-29",
    }


def test_half_hour_zones_count_an_hour_in_the_day_it_starts() -> None:
    chosen = parse(range="today", tz="Asia/Kolkata")  # +05:30: 30 Nov began at 18:30 UTC
    assert chosen.first == date(2026, 11, 30)
    assert chosen.start == datetime(2026, 11, 29, 19, tzinfo=UTC)
    assert chosen.day_of(datetime(2026, 11, 29, 18, tzinfo=UTC)) == date(2026, 11, 29)


def test_source_is_kept() -> None:
    assert parse(source="web-shop").source == "web-shop"
    assert parse(source="  ").source is None


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"range": "fortnight"}, "range"),
        ({"range": "custom", "from": "2026-11-01"}, "to"),
        ({"from": "2026-11-31", "to": "2026-12-01"}, "from"),
        ({"from": "yesterday", "to": "2026-12-01"}, "from"),
        ({"from": "2026-11-02", "to": "2026-11-01"}, "to"),
        ({"from": "2020-01-01", "to": "2026-11-01"}, "to"),
        ({"from": "0001-01-01", "to": "2026-11-01"}, "from"),
        ({"tz": "Mars/Olympus"}, "tz"),
        ({"tz": "../../etc/passwd"}, "tz"),
        ({"tz": "x" * 300}, "tz"),
        ({"source": "<script>"}, "source"),
    ],
)
def test_bad_queries_are_400_naming_the_field(params: dict[str, str], field: str) -> None:
    with pytest.raises(InputError) as caught:
        parse(**params)
    assert caught.value.status == 400
    assert [d.field for d in caught.value.details] == [field]
