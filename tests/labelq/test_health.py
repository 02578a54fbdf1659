"""`labelq health`: exit codes and report, against a real Redis and a real worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from labelq.local_redis import free_port
from tests.conftest import WorkerFactory


def health(redis_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LABELQ_REDIS_URL": redis_url}
    return subprocess.run(
        [sys.executable, "-m", "labelq.cli", "health", "--json"], env=env, capture_output=True, text=True, timeout=60
    )


def test_redis_down_is_exit_3() -> None:
    done = health(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    assert done.returncode == 3
    report = json.loads(done.stdout)
    assert report["status"] == "redis unreachable" and "Connection" in report["redis"]


def test_no_worker_is_exit_1(redis_url: str) -> None:
    done = health(redis_url)
    assert done.returncode == 1 and json.loads(done.stdout)["status"] == "no ready worker"


def test_a_ready_worker_is_exit_0_with_its_model_and_queues(start_worker: WorkerFactory, redis_url: str) -> None:
    start_worker()
    done = health(redis_url)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    ((name, info),) = report["workers"].items()
    assert name.startswith("test-0@") and info["model"] == "minilm-l6-int8" and info["revision"]
    assert name in report["pinged"]  # and it answers Celery's ping
    assert {"realtime", "bulk", "in_flight", "dead_letters"} <= set(report["depths"])


def test_queue_depths_count_prioritised_requests(redis_url: str) -> None:
    """kombu's Redis transport puts a request sent with priority >= 3 on a sub-list of its queue."""
    import redis as redis_py

    r = redis_py.Redis.from_url(redis_url)
    r.lpush("labelq.realtime", b"{}")
    r.lpush("labelq.realtime\x06\x169", b"{}", b"{}")
    r.lpush("labelq.bulk\x06\x163", b"{}")
    report = json.loads(health(redis_url).stdout)
    assert report["depths"]["realtime"] == 3 and report["depths"]["bulk"] == 1
