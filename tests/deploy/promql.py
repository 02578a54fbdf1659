"""What the shipped rules and dashboard may name: the series the code exports, as Prometheus scrapes them."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from worker import metrics

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERTS_TEST = ROOT / "deploy" / "prometheus" / "alerts.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "labelq.json"

# the series an expression names: labelq's own, and prometheus-client's process_* / python_* (single process)
SERIES_NAME = re.compile(r"\b((?:labelq|process|python)_[a-z0-9_]+)\b")
# series Prometheus itself writes for every target and every alert
PROMETHEUS_OWN = {"up", "ALERTS", "ALERTS_FOR_STATE"}


def series_of(metric: MetricWrapperBase) -> dict[str, tuple[str, ...]]:
    """Each series name a metric exposes, with its label names (a histogram's `le` on its buckets)."""
    name, labels = metric._name, tuple(metric._labelnames)
    if isinstance(metric, Counter):
        return {f"{name}_total": labels}
    if isinstance(metric, Histogram):
        return {f"{name}_bucket": (*labels, "le"), f"{name}_count": labels, f"{name}_sum": labels}
    assert isinstance(metric, Gauge), f"{name}: a type the rules do not expect"
    return {name: labels}


def exported() -> dict[str, tuple[str, ...]]:
    """Every series name a worker host exports, with its label names: worker/metrics.py's, a fleet's servers
    (worker/process/servers.py), and the default registry's process and python collectors (sampled now: they take
    no labels of ours)."""
    names: dict[str, tuple[str, ...]] = {}
    for metric in vars(metrics).values():
        if isinstance(metric, MetricWrapperBase):
            names.update(series_of(metric))
    for family in REGISTRY.collect():
        for sample in family.samples:
            if sample.name.startswith(("process_", "python_")):
                names.setdefault(sample.name, tuple(sample.labels))
    # a fleet's parent adds each server's families (worker/process/servers.py): their names and label names
    from worker.process.servers import ServersCollector

    for family in ServersCollector({}).collect():
        names[family.name] = tuple(family._labelnames)  # type: ignore[attr-defined]
    return names


def named_series(expression: str) -> set[str]:
    return set(SERIES_NAME.findall(expression))
