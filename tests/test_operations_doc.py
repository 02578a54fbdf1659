"""docs/operations.md names every Prometheus metric the code registers, and says what to do for every shipped alert."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from prometheus_client import Counter
from prometheus_client.metrics import MetricWrapperBase

from worker import metrics

ROOT = Path(__file__).resolve().parents[1]
PAGE = (ROOT / "docs" / "operations.md").read_text()
PACKAGES = ("worker", "labelq", "producer", "schemas")
CONSTRUCTOR = re.compile(r"\b(?:Counter|Gauge|Histogram|Summary|Info|Enum)\(\s*f?[\"']([a-zA-Z_:][a-zA-Z0-9_:]*)[\"']")


def exposed(metric: MetricWrapperBase) -> str:
    """The name Prometheus scrapes: prometheus-client strips a counter's `_total`, and adds it back."""
    return f"{metric._name}_total" if isinstance(metric, Counter) else metric._name


def documented() -> set[str]:
    rows = [line for line in PAGE.splitlines() if line.startswith("| `labelq_")]
    return {re.match(r"\| `([a-z_]+)`", row).group(1) for row in rows}  # type: ignore[union-attr]


def test_every_metric_of_worker_metrics_has_a_row() -> None:
    registered = {exposed(m) for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)}
    assert len(registered) >= 20
    assert registered <= documented(), f"not in docs/operations.md: {sorted(registered - documented())}"


def test_every_metric_constructed_anywhere_in_the_code_has_a_row() -> None:
    constructed = {
        name
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        for name in CONSTRUCTOR.findall(path.read_text())
    }
    assert "labelq_labelset_shadow_total" in constructed  # the search finds what it should
    assert constructed <= documented(), f"not in docs/operations.md: {sorted(constructed - documented())}"


def test_the_page_lists_no_metric_the_code_does_not_have() -> None:
    registered = {exposed(m) for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)}
    assert documented() <= registered, f"in docs/operations.md, not in the code: {sorted(documented() - registered)}"


def shipped_alerts() -> set[str]:
    groups = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())["groups"]
    return {rule["alert"] for group in groups for rule in group["rules"]}


def test_every_shipped_alert_has_a_row_saying_what_to_do_and_the_page_names_no_other() -> None:
    section = PAGE.split("\n## Alerts and dashboard\n", 1)[1].split("\n## ", 1)[0]  # the runbook_url's anchor
    rows = {re.match(r"\| `(\w+)` \| (page|ticket) \|", line) for line in section.splitlines()}
    documented_alerts = {row.group(1) for row in rows if row}
    assert documented_alerts == shipped_alerts()
    named = set(re.findall(r"`(Labelq[A-Za-z]+)`", PAGE))
    assert named <= shipped_alerts(), f"named in docs/operations.md, not in alerts.yml: {named - shipped_alerts()}"


def test_each_alert_row_gives_the_severity_the_rule_has() -> None:
    groups = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())["groups"]
    for rule in (rule for group in groups for rule in group["rules"]):
        assert f"| `{rule['alert']}` | {rule['labels']['severity']} |" in PAGE, rule["alert"]
