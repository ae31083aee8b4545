"""The rules as pure functions over figures: each fires past its threshold and not before."""

from __future__ import annotations

from datetime import timedelta

from firstparty.alerts.evaluate import Figures, Requests, Volume, evaluate
from firstparty.alerts.rules import Rule
from firstparty.settings import AlertSettings
from tests.alerts.rows import START

RULES = AlertSettings()


def _fired(figures: Figures, rules: AlertSettings = RULES) -> set[tuple[str, str]]:
    return {f.key for f in evaluate(figures, rules).firing}


def test_delivery_success_below_the_threshold_fires() -> None:
    figures = Figures(now=START, requests={"meta": Requests(94, 100), "tiktok": Requests(95, 100)})
    assert _fired(figures) == {("delivery_success", "meta")}


def test_delivery_success_with_too_few_requests_is_undecided() -> None:
    verdicts = evaluate(Figures(now=START, requests={"meta": Requests(0, 19)}), RULES)
    assert verdicts.firing == []
    assert verdicts.undecided == {("delivery_success", "meta")}


def test_queue_lag_fires_past_max_seconds() -> None:
    assert _fired(Figures(now=START, oldest_due=START - timedelta(seconds=300))) == set()
    assert _fired(Figures(now=START, oldest_due=START - timedelta(seconds=301))) == {
        ("queue_lag", "outbox")
    }


def test_source_silent_compares_with_last_week_in_usual_hours() -> None:
    volumes = {"www": Volume(49, 100), "crm": Volume(50, 100), "night": Volume(0, 19)}
    assert _fired(Figures(now=START, volumes=volumes)) == {("source_silent", "www")}


def test_server_errors_above_max_count_fire() -> None:
    assert _fired(Figures(now=START, server_errors=10)) == set()
    assert _fired(Figures(now=START, server_errors=11)) == {("server_errors", "server")}


def test_destination_setup_fires_per_destination() -> None:
    setup = {"meta": "in test mode (test_event_code=TEST1)"}
    (finding,) = evaluate(Figures(now=START, setup=setup), RULES).firing
    assert (finding.rule, finding.subject) == (Rule.DESTINATION_SETUP, "meta")
    assert "TEST1" in finding.detail


def test_a_disabled_rule_never_fires() -> None:
    rules = AlertSettings.model_validate({"server_errors": {"enabled": False}})
    assert _fired(Figures(now=START, server_errors=1000), rules) == set()


def test_a_destination_with_no_request_in_the_window_keeps_its_state() -> None:
    figures = Figures(
        now=START, requests={"meta": Requests(1, 50)}, destinations=frozenset({"meta", "tiktok"})
    )
    verdicts = evaluate(figures, RULES)
    assert [f.key for f in verdicts.firing] == [("delivery_success", "meta")]
    assert verdicts.undecided == {("delivery_success", "tiktok")}
