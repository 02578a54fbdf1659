"""deploy/grafana/labelq.json: a Grafana dashboard that answers the operator's four questions, whose every query
names only series (and labels) a worker exports, and parses as PromQL."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.promql import DASHBOARD, PROMETHEUS_OWN, exported, named_series

QUESTIONS = ("Is the fleet keeping up?", "Where does latency go?", "What is refused, and why?", "Are webhooks failing?")
SELECTOR = re.compile(r"\b((?:labelq|process|python)_[a-z0-9_]+)\{([^}]*)\}")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
# Grafana's variables, as Prometheus would see them once Grafana fills them in
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$job": ".+"}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def expressions() -> list[str]:
    """Every PromQL expression of the dashboard: its panels' queries, and its variables'."""
    board = dashboard()
    exprs = [target["expr"] for panel in board["panels"] for target in panel.get("targets", [])]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            exprs.append(re.fullmatch(r"label_values\((.+), \w+\)", variable["query"]["query"]).group(1))  # type: ignore[union-attr]
    return exprs


def as_prometheus_sees_it(expression: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expression = expression.replace(variable, value)
    return expression


def test_it_is_a_dashboard_with_a_row_per_question_and_a_query_in_every_panel() -> None:
    board = dashboard()
    assert board["uid"] == "labelq" and board["title"] == "labelq"
    rows = [panel["title"] for panel in board["panels"] if panel["type"] == "row"]
    assert set(QUESTIONS) <= set(rows)
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    sections: dict[str, int] = {}
    row = ""
    for panel in board["panels"]:
        if panel["type"] == "row":
            row = panel["title"]
            continue
        sections[row] = sections.get(row, 0) + 1
        assert panel["targets"] and all(target["expr"] for target in panel["targets"]), panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["description"], panel["title"]
    assert all(sections.get(question, 0) >= 3 for question in QUESTIONS), sections


def test_no_two_panels_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard()["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_every_series_a_query_names_is_one_a_worker_exports() -> None:
    series = exported()
    named: set[str] = set()
    for expression in expressions():
        unknown = named_series(expression) - series.keys()
        assert not unknown, f"{unknown} in {expression!r}: not exported by worker/metrics.py"
        named |= named_series(expression)
        for name, matchers in SELECTOR.findall(expression):
            labels = set(MATCHER.findall(matchers)) - {"instance", "job"}  # Prometheus's target labels
            assert labels <= set(series[name]), f"{name}{{{matchers}}}: it has labels {series[name]}"
        bare = set(re.findall(r"\b([A-Za-z_]+)\{", expression)) - series.keys()
        assert bare <= PROMETHEUS_OWN, expression
    worker_metrics = {name for name in series if name.startswith("labelq_")}
    shown = {re.sub(r"_(bucket|count|sum)$", "", name) for name in named}
    missing = {re.sub(r"_(bucket|count|sum)$", "", name) for name in worker_metrics} - shown
    assert not missing, f"labelq metrics on no panel: {sorted(missing)}"


def test_every_query_parses_as_promql(promtool: str, tmp_path: Path) -> None:
    """promtool has no `parse`: the queries, as recording rules, go through `promtool check rules`."""
    rules = [{"record": f"dashboard:query_{i}", "expr": as_prometheus_sees_it(e)} for i, e in enumerate(expressions())]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    check = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(rules)} rules found" in check.stdout
