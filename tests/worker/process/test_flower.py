"""A real Flower (2.x) run as a Celery estate runs it, `celery -A worker.celery_app flower`, watching a labelq
worker: the worker page renders, the task result API answers, each task shows its own args, result and share of
its batch's runtime, and the worker's processed count is not zero."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from celery import Celery

from labelq.local_redis import free_port
from tests.conftest import WorkerFactory

pytest.importorskip("flower", reason="Flower is part of the test extra: pip install -e '.[test]'")
pytestmark = pytest.mark.slow
SETTINGS = {  # the embedded MiniLM: a request's cost (its share of a batch) is its text and the labels it embeds
    "celery_events": True,
    "realtime_max_wait_ms": 300,  # the test's two requests make one batch
    "event_text_chars": 12,
}


@pytest.fixture
def flower(redis_url: str, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    with (tmp_path / "flower.log").open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "worker.celery_app",
                "flower",
                f"--port={port}",
                "--address=127.0.0.1",
            ],
            # Flower 2 serves its API unauthenticated only when told to (an operator puts auth in front)
            env={**os.environ, "LABELQ_REDIS_URL": redis_url, "FLOWER_UNAUTHENTICATED_API": "true"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "flower.log").read_text()[-3000:]
        try:
            httpx.get(url + "/healthcheck", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.2)
    yield url
    process.terminate()
    process.wait(timeout=10)


def _until(check: Any, timeout_s: float = 20) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.3)
    raise AssertionError("not seen in time")


def test_flower_shows_a_labelq_worker_and_its_tasks(
    start_worker: WorkerFactory, celery_app: Celery, flower: str
) -> None:
    start_worker(**SETTINGS)
    name = "test-0@" + socket.gethostname()
    text = "my parcel never arrived and nobody answers"
    fresh = uuid.uuid4().hex[:8]  # labels no model run has seen: each request costs its text and its labels
    small = celery_app.send_task(
        "labelq.classify", args=[{"text": text, "labels": [f"a{fresh}", f"b{fresh}"]}], queue="labelq.realtime"
    )
    large = celery_app.send_task(
        "labelq.classify", args=[{"text": text, "labels": [f"{i}{fresh}" for i in "cdefghij"]}], queue="labelq.realtime"
    )
    assert small.get(timeout=30)["labels"] and large.get(timeout=30)["labels"]

    page = httpx.get(f"{flower}/worker/{name}", timeout=30)
    assert page.status_code == 200 and "labelq.realtime" in page.text  # its queues, in kombu's format

    result = httpx.get(f"{flower}/api/task/result/{small.id}", timeout=30)
    assert result.status_code == 200, result.text
    assert result.json()["state"] == "SUCCESS" and result.json()["result"]["id"] == small.id

    infos = {
        task.id: _until(lambda task=task: _finished(flower, task.id)) for task in (small, large)
    }  # the events Flower received
    for info in infos.values():
        assert info["args"].startswith("[{") and "my parcel ne..." in info["args"] and text not in info["args"]
        assert info["result"].startswith("{") and fresh in info["result"]  # the result itself, not a placeholder
        assert info["worker"] == name
    share = infos[large.id]["runtime"] / infos[small.id]["runtime"]
    print(
        f"\nFlower: runtimes {infos[small.id]['runtime']:.4f} s (text + 2 new labels) and "
        f"{infos[large.id]['runtime']:.4f} s (text + 8): ratio {share:.2f}, 3 expected"
    )
    assert 2.7 <= share <= 3.3  # each task its own share of the batch (within 10%), not the whole batch's

    workers = _until(lambda: httpx.get(f"{flower}/api/workers?refresh=1", timeout=30).json().get(name))
    assert workers["stats"]["total"].get("labelq.classify", 0) >= 2


def _finished(flower: str, task_id: str) -> dict[str, Any] | None:
    response = httpx.get(f"{flower}/api/task/info/{task_id}", timeout=10)
    if response.status_code != 200:
        return None
    info: dict[str, Any] = response.json()
    return info if info.get("state") == "SUCCESS" and info.get("runtime") else None
