"""Issue 15: deploy/prometheus/firstparty-alerts.yml is well-formed Prometheus rules and names
only metrics the running app exposes on /metrics (promtool is not installed: the Debian package
is ~100 MB)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import AppClient

RULES = Path(__file__).parents[2] / "deploy" / "prometheus" / "firstparty-alerts.yml"
METRIC = re.compile(r"\bfirstparty_[a-z_]+\b")
OUTCOME = re.compile(r'outcome(?:=~?)"([^"]+)"')


def _rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_every_rule_has_a_name_an_expression_a_severity_and_a_summary() -> None:
    rules = _rules()
    assert {r["alert"] for r in rules} >= {
        "FirstpartyQueueLag",
        "FirstpartyDeliverySuccessLow",
        "FirstpartyServerErrors",
    }
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"] and METRIC.search(rule["expr"])
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]


async def test_every_metric_named_is_exposed(app_client: AppClient) -> None:
    exposed = (await app_client.http.get("/metrics")).text
    named = {name for rule in _rules() for name in METRIC.findall(rule["expr"])}
    assert named >= {"firstparty_delivery_lag_seconds", "firstparty_deliveries_total"}
    for name in named:
        assert re.search(rf"^# TYPE {name} ", exposed, re.M), name


def test_the_delivery_outcomes_named_are_those_the_worker_counts() -> None:
    counted = {"delivered", "retry", "failed", "skipped"}  # metrics.DELIVERIES' outcome label
    for rule in _rules():
        for alternatives in OUTCOME.findall(rule["expr"]):
            assert set(alternatives.split("|")) <= counted, rule["alert"]
