"""A real Prometheus (Debian's `prometheus`, on a loopback port) scrapes a real worker under load with
deploy/prometheus/alerts.yml loaded: the series are there, the backlog makes LabelqRealtimeBacklog pending or
firing, the rules that should stay quiet do, every rule evaluates without error, and every dashboard query runs.

The rules file is loaded as shipped except `for:`, which the test shortens to 1 s (Prometheus evaluates every 1 s
here) so an alert can fire within seconds."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from labelq.local_redis import free_port
from producer import Client
from schemas import ClassifyRequest
from tests.conftest import WorkerFactory
from tests.deploy.promql import ALERTS
from tests.deploy.test_grafana_dashboard import as_prometheus_sees_it, expressions

DEADLINE_S = 90.0  # generous: a loaded machine, a worker to start, scrapes and evaluations every second
BACKLOG = 1000  # realtime requests waiting before the worker starts: over the rule's 100


class Prometheus:
    """One `prometheus` process; `api(path, **params)` is its HTTP API's `data`."""

    def __init__(self, binary: str, directory: Path, target_port: int) -> None:
        self.port = free_port()
        self.log_path = directory / "prometheus.log"
        rules = yaml.safe_load(ALERTS.read_text())
        for group in rules["groups"]:
            for rule in group["rules"]:
                if "for" in rule:
                    rule["for"] = "1s"
        (directory / "alerts.yml").write_text(yaml.safe_dump(rules))
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": ["alerts.yml"],
            "scrape_configs": [{"job_name": "labelq", "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}]}],
        }
        (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={directory / 'prometheus.yml'}",
                    f"--storage.tsdb.path={directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expression: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api("query", query=expression)["result"]
        return result

    def wait_for(self, what: str, check: Any) -> Any:
        """Poll `check()` until it returns something truthy; fail naming `what` after DEADLINE_S."""
        deadline = time.monotonic() + DEADLINE_S
        while True:
            assert self.process.poll() is None, self.log_path.read_text()[-4000:]
            try:
                found = check()
            except OSError:  # not listening yet
                found = None
            if found:
                return found
            assert time.monotonic() < deadline, f"no {what} within {DEADLINE_S:.0f} s"
            time.sleep(0.5)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def metrics_port() -> int:
    return free_port()


@pytest.fixture
def prometheus_server(prometheus: str, tmp_path: Path, metrics_port: int) -> Iterator[Prometheus]:
    server = Prometheus(prometheus, tmp_path, metrics_port)
    try:
        yield server
    finally:
        server.stop()


def alert_states(server: Prometheus) -> dict[str, str]:
    return {alert["labels"]["alertname"]: alert["state"] for alert in server.api("alerts")["alerts"]}


def test_a_backlog_scraped_by_a_real_prometheus_makes_the_backlog_alert_fire(
    prometheus_server: Prometheus, start_worker: WorkerFactory, client: Client, metrics_port: int
) -> None:
    server = prometheus_server
    requests = [
        ClassifyRequest(id=f"p-{i}", text=f"billing bug {i}", labels=["billing", "bug", "praise"])  # type: ignore[arg-type]
        for i in range(BACKLOG)
    ]
    client.submit_many(requests, queue="realtime")  # waiting before any worker is up: a backlog from the start
    # a slow model (4 requests a batch, 0.5 s a run: 8 requests a second) keeps the backlog over 100 for minutes
    start_worker(
        metrics_port=metrics_port,
        enable_fake_model=True,
        model="fake",
        fake_model_run_ms=500,
        realtime_batch_size=4,
    )

    # the series exist, scraped from the worker
    depth = server.wait_for(
        "scraped realtime depth over 100",
        lambda: server.query('labelq_queue_depth{job="labelq", queue="labelq.realtime"} > 100'),
    )
    assert float(depth[0]["value"][1]) <= BACKLOG
    server.wait_for(
        "requests received",
        lambda: server.query('labelq_requests_received_total{queue="labelq.realtime"} > 0'),
    )
    assert server.query("labelq_model_load_seconds")[0]["metric"]["model"] == "fake"

    # the backlog makes the alert pending, then firing
    state = server.wait_for(
        "LabelqRealtimeBacklog pending or firing",
        lambda: alert_states(server).get("LabelqRealtimeBacklog"),  # listed: pending or firing
    )
    print(f"\nLabelqRealtimeBacklog: {state}; alerts {alert_states(server)}")
    firing = server.wait_for(
        "LabelqRealtimeBacklog firing",
        lambda: [
            a
            for a in server.api("alerts")["alerts"]
            if a["labels"]["alertname"] == "LabelqRealtimeBacklog" and a["state"] == "firing"
        ],
    )
    assert firing[0]["labels"] == {
        "alertname": "LabelqRealtimeBacklog",
        "queue": "labelq.realtime",
        "severity": "page",
    }

    # requests waited for the worker: the realtime queue wait's p99 shows it
    wait_p99 = server.wait_for(
        "a realtime queue wait p99",
        lambda: server.query(
            "histogram_quantile(0.99, sum by (le) "
            '(rate(labelq_queue_wait_seconds_bucket{queue="labelq.realtime"}[1m]))) > 0.25'
        ),
    )
    print(f"realtime queue wait p99 under the backlog: {float(wait_p99[0]['value'][1]):.2f} s")

    # the rules that should stay quiet do: a worker is ready and consuming, nothing dead-lettered or retried
    quiet = {"LabelqNoWorkerReady", "LabelqStalled", "LabelqDeadLetters", "LabelqErrors", "LabelqWebhooksGivenUp"}
    assert not quiet & set(alert_states(server))
    # every rule of the shipped file is loaded and evaluates against real series without an error
    loaded = {rule["name"]: rule for group in server.api("rules")["groups"] for rule in group["rules"]}
    shipped = {rule["alert"] for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]}
    assert set(loaded) == shipped
    assert all(rule["health"] == "ok" for rule in loaded.values()), {n: r.get("lastError") for n, r in loaded.items()}

    # every dashboard query runs (the API answers `success`), and the fleet's own panels have data
    for expression in expressions():
        server.query(as_prometheus_sees_it(expression))
    for expression in expressions():
        if "labelq_queue_depth" in expression or "labelq_model_load_seconds" in expression:
            assert server.query(as_prometheus_sees_it(expression)), expression
