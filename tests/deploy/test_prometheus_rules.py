"""deploy/prometheus/alerts.yml: promtool accepts it, its unit tests (alerts.test.yml) pass and cover every rule
both ways, and it names only series and labels a worker exports."""

from __future__ import annotations

import re
import subprocess
from typing import Any

import yaml

from tests.deploy.promql import ALERTS, ALERTS_TEST, PROMETHEUS_OWN, exported, named_series

# what issue 34 asks to page on, each by the rule that does it
REQUIRED = {
    "a realtime backlog (queue wait growing)": "LabelqRealtimeBacklog",
    "a growing backlog on any queue": "LabelqBacklogGrowing",
    "the error rate": "LabelqErrors",
    "dead letters": "LabelqDeadLetters",
    "no worker ready": "LabelqNoWorkerReady",
    "webhook retries exhausted": "LabelqWebhooksGivenUp",
    "realtime p99 over its target": "LabelqRealtimeSlow",
}
SELECTOR = re.compile(r"\b((?:labelq|process|python)_[a-z0-9_]+)\{([^}]*)\}")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_promtool_check_rules_passes(promtool: str) -> None:
    check = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(rules())} rules found" in check.stdout


def test_promtool_test_rules_passes(promtool: str) -> None:
    unit = subprocess.run(
        [promtool, "test", "rules", ALERTS_TEST.name],
        cwd=ALERTS_TEST.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert unit.returncode == 0, unit.stdout + unit.stderr
    assert "SUCCESS" in unit.stdout


def test_the_rules_asked_for_are_there_and_each_says_how_urgent_and_where_to_read() -> None:
    by_name = {rule["alert"]: rule for rule in rules()}
    missing = {need: name for need, name in REQUIRED.items() if name not in by_name}
    assert not missing
    for name, rule in by_name.items():
        assert rule["labels"]["severity"] in {"page", "ticket"}, name
        assert rule["annotations"]["runbook_url"] == "docs/operations.md#alerts-and-dashboard", name
        assert rule["annotations"]["summary"], name


def test_every_rule_has_unit_tests_that_make_it_fire_and_keep_it_quiet() -> None:
    cases = [case for test in yaml.safe_load(ALERTS_TEST.read_text())["tests"] for case in test["alert_rule_test"]]
    for rule in rules():
        own = [case for case in cases if case["alertname"] == rule["alert"]]
        assert any(case["exp_alerts"] for case in own), f"{rule['alert']}: no series make it fire"
        assert any(not case["exp_alerts"] for case in own), f"{rule['alert']}: no series keep it quiet"


def test_the_rules_and_their_tests_name_only_series_and_labels_a_worker_exports() -> None:
    series = exported()
    tests = yaml.safe_load(ALERTS_TEST.read_text())["tests"]
    texts = [rule["expr"] for rule in rules()]
    texts += [entry["series"] for test in tests for entry in test["input_series"]]
    for text in texts:
        unknown = named_series(text) - series.keys()
        assert not unknown, f"{unknown} in {text!r}: not exported by worker/metrics.py"
        for name, matchers in SELECTOR.findall(text):
            labels = set(MATCHER.findall(matchers)) - {"instance", "job"}  # Prometheus's target labels
            assert labels <= set(series[name]), f"{name}{{{matchers}}}: it has labels {series[name]}"
    input_names = {
        re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", entry["series"]).group(0) for t in tests for entry in t["input_series"]
    }  # type: ignore[union-attr]
    assert input_names - series.keys() <= PROMETHEUS_OWN
