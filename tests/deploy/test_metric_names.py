"""A real worker's /metrics passes promtool's lint (Prometheus's naming conventions: base units, `_total` on
counters, help text), one process and the parent's multiprocess endpoint alike, with every labelled series in it."""

from __future__ import annotations

import re
import signal
import subprocess
import time
import urllib.request

import psutil
import pytest

from labelq.local_redis import free_port
from producer import Client
from schemas import ClassifyRequest
from schemas.transport import QUEUE_REALTIME
from tests.conftest import WorkerFactory
from tests.worker.test_streaming import raw_celery_message


def scrape_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text: str = response.read().decode()
    return text


@pytest.mark.parametrize("processes", [1, 2])
def test_a_worker_s_metrics_pass_promtool_check_metrics(
    promtool: str, start_worker: WorkerFactory, client: Client, processes: int
) -> None:
    port = free_port()
    start_worker(worker_processes=processes, metrics_port=port, enable_fake_model=True, model="fake")
    requests = [ClassifyRequest(id=f"m-{i}", text=f"billing bug {i}", labels=["billing", "bug"]) for i in range(20)]  # type: ignore[arg-type]
    client.submit_many(requests[:10], queue="realtime")
    client.submit_many(requests[10:], queue="bulk")
    client.redis.lpush(QUEUE_REALTIME, raw_celery_message({"id": "bad", "text": "", "labels": ["a"]}, QUEUE_REALTIME))
    assert all(client.wait(f"m-{i}", timeout_s=60) for i in range(20))
    deadline = time.monotonic() + 60
    text = scrape_text(port)
    while 'outcome="empty_text"' not in text and time.monotonic() < deadline:  # the error result is counted
        time.sleep(0.2)
        text = scrape_text(port)
    for series in ("labelq_results_total", "labelq_end_to_end_seconds_bucket", "labelq_model_load_seconds"):
        assert series in text
    lint = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_a_webhook_worker_s_metrics_pass_promtool_check_metrics(promtool: str, start_worker: WorkerFactory) -> None:
    port = free_port()
    start_worker(role="webhooks", metrics_port=port)
    text = scrape_text(port)
    assert "process_resident_memory_bytes" in text
    lint = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_the_parent_s_restart_count_is_one_series_with_its_count(start_worker: WorkerFactory) -> None:
    """The parent of --processes N serves its own restart and recycle counters beside the children's sums: once,
    with the parent's value (each child defines them too, at 0: the endpoint served two families of one name)."""
    port = free_port()
    parent = start_worker(worker_processes=2, metrics_port=port, enable_fake_model=True, model="fake")
    child = psutil.Process(parent.pid).children()[0]
    child.send_signal(signal.SIGKILL)
    pattern = re.compile(r"^labelq_worker_process_restarts_total (\S+)$", re.MULTILINE)
    deadline = time.monotonic() + 60
    samples = pattern.findall(scrape_text(port))
    while samples != ["1.0"] and time.monotonic() < deadline:
        time.sleep(0.2)
        samples = pattern.findall(scrape_text(port))
    assert samples == ["1.0"]
    assert len(re.findall(r"^labelq_worker_process_recycles_total ", scrape_text(port), re.MULTILINE)) == 1
