"""labelq beside another Celery app on the same Redis database: it never touches what that app holds."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery

from producer import Client
from tests.conftest import WorkerFactory
from tests.worker.neighbour_app import DONE_KEY, RUNS_KEY
from tests.worker.test_celery_native import FAKE

ROOT = Path(__file__).resolve().parents[2]
LABELQ_SWEEPS = {  # labelq sweeps often, on a 3 s visibility timeout (batches small enough to fit it)
    "visibility_timeout_s": 3,
    "unacked_restore_interval_s": 0.5,
    "realtime_max_pairs": 20,
    "bulk_max_pairs": 20,
}


@pytest.fixture
def neighbour(redis_url: str, tmp_path: Path) -> Iterator[Path]:
    """A plain Celery worker of another app (two threads, so a task restored behind its back runs at once)."""
    log = tmp_path / "neighbour.log"
    env = {**os.environ, "NEIGHBOUR_BROKER": redis_url}
    command = [sys.executable, "-m", "celery", "-A", "tests.worker.neighbour_app", "worker", "-P", "threads", "-c", "2"]
    command += ["-Q", "neighbour", "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "INFO"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while b" ready." not in log.read_bytes():
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.1)
    yield log
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGKILL)
    process.wait()


def test_a_neighbours_acks_late_task_runs_once_beside_a_labelq_worker(
    start_worker: WorkerFactory, client: Client, celery_app: Celery, neighbour: Path
) -> None:
    """Before: labelq's sweep restored every entry of kombu's shared `unacked` hash older than labelq's
    visibility timeout, whoever held it, so another app's long task ran twice."""
    start_worker(**FAKE, **LABELQ_SWEEPS)
    celery_app.send_task("neighbour.slow", args=[6], queue="neighbour")
    deadline = time.monotonic() + 30
    while int(client.redis.get(DONE_KEY) or 0) < 1:
        assert time.monotonic() < deadline, neighbour.read_text()[-3000:]
        time.sleep(0.2)
    time.sleep(1.5)  # a copy restored behind its back would have started by now (2 threads)
    assert int(client.redis.get(RUNS_KEY) or 0) == 1, neighbour.read_text()[-3000:]


def test_another_apps_unacked_entries_are_left_to_that_app(start_worker: WorkerFactory, client: Client) -> None:
    """An expired entry in kombu's `unacked` that is not labelq's stays where its app put it."""
    entry = json.dumps([{"body": "e30=", "headers": {"id": "n1"}, "properties": {}}, "", "celery"])
    client.redis.hset("unacked", "theirs", entry)
    client.redis.zadd("unacked_index", {"theirs": time.time() - 3600})
    start_worker(**FAKE, **LABELQ_SWEEPS)
    time.sleep(2)  # several sweeps
    assert client.redis.hget("unacked", "theirs") == entry.encode() and not client.redis.exists("celery")
