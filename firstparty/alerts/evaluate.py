"""Each rule judged over figures already read: pure functions, no I/O, the clock passed in."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from firstparty.alerts.rules import Finding, Rule, Verdicts
from firstparty.settings import AlertSettings


@dataclass(frozen=True)
class Requests:
    """A destination's outgoing requests over the window: how many, how many delivered."""

    delivered: int
    total: int


@dataclass(frozen=True)
class Volume:
    """A source's events over the window now and over the same minutes one week earlier."""

    now: int
    last_week: int


@dataclass(frozen=True)
class Figures:
    """Everything the rules look at, read at `now` (figures.py)."""

    now: datetime
    requests: Mapping[str, Requests] = field(default_factory=dict)
    oldest_due: datetime | None = None
    volumes: Mapping[str, Volume] = field(default_factory=dict)
    server_errors: int = 0
    setup: Mapping[str, str] = field(default_factory=dict)  # destination -> what is wrong
    destinations: frozenset[str] = frozenset()  # those in force now


def evaluate(figures: Figures, rules: AlertSettings) -> Verdicts:
    """Every enabled rule over `figures`."""
    verdicts = Verdicts()
    if rules.delivery_success.enabled:
        _delivery_success(figures, rules, verdicts)
    if rules.queue_lag.enabled:
        _queue_lag(figures, rules, verdicts)
    if rules.source_silent.enabled:
        _source_silent(figures, rules, verdicts)
    if rules.server_errors.enabled:
        _server_errors(figures, rules, verdicts)
    if rules.destination_setup.enabled:
        verdicts.firing.extend(
            Finding(Rule.DESTINATION_SETUP, name, problem)
            for name, problem in sorted(figures.setup.items())
        )
    return verdicts


def _delivery_success(figures: Figures, rules: AlertSettings, verdicts: Verdicts) -> None:
    rule = rules.delivery_success
    for name in figures.destinations - set(figures.requests):  # no request: no verdict
        verdicts.undecided.add((Rule.DELIVERY_SUCCESS.value, name))
    for name, seen in sorted(figures.requests.items()):
        if seen.total < rule.min_attempts:
            verdicts.undecided.add((Rule.DELIVERY_SUCCESS.value, name))
            continue
        percent = 100.0 * seen.delivered / seen.total
        if percent < rule.min_percent:
            detail = (
                f"{percent:.1f} % of {seen.total} requests delivered over the last "
                f"{rule.window_minutes} min (threshold {rule.min_percent:g} %)"
            )
            verdicts.firing.append(Finding(Rule.DELIVERY_SUCCESS, name, detail))


def _queue_lag(figures: Figures, rules: AlertSettings, verdicts: Verdicts) -> None:
    if figures.oldest_due is None:
        return
    lag = (figures.now - figures.oldest_due).total_seconds()
    if lag > rules.queue_lag.max_seconds:
        detail = (
            f"the oldest due delivery has waited {lag:.0f} s "
            f"(threshold {rules.queue_lag.max_seconds} s)"
        )
        verdicts.firing.append(Finding(Rule.QUEUE_LAG, "outbox", detail))


def _source_silent(figures: Figures, rules: AlertSettings, verdicts: Verdicts) -> None:
    rule = rules.source_silent
    for name, volume in sorted(figures.volumes.items()):
        if volume.last_week < rule.min_last_week:
            continue  # not its usual hours: silence is expected
        if 100.0 * volume.now < rule.min_percent * volume.last_week:
            detail = (
                f"{volume.now} events over the last {rule.window_minutes} min, "
                f"{volume.last_week} in the same minutes a week ago "
                f"(threshold {rule.min_percent:g} %)"
            )
            verdicts.firing.append(Finding(Rule.SOURCE_SILENT, name, detail))


def _server_errors(figures: Figures, rules: AlertSettings, verdicts: Verdicts) -> None:
    rule = rules.server_errors
    if figures.server_errors > rule.max_count:
        detail = (
            f"{figures.server_errors} answers 500 over the last {rule.window_minutes} min "
            f"(threshold {rule.max_count})"
        )
        verdicts.firing.append(Finding(Rule.SERVER_ERRORS, "server", detail))
