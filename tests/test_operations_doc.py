"""docs/operations.md names every Prometheus metric the code registers."""

from __future__ import annotations

import re
from pathlib import Path

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
