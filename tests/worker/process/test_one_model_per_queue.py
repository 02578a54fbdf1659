"""One model per queue (worker/process/fleet.py): a worker refuses to start, in one line and exit 2, on a queue a
live worker serves with another model; two starting at once cannot both pass; add_consumer keeps the rule."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import redis as redis_lib
from celery import Celery

from producer import Client
from schemas.transport import QUEUE_BULK, QUEUE_REALTIME, WORKER_KEY
from tests.conftest import WorkerFactory
from tests.worker import test_celery_queues
from tests.worker.test_celery_native import FAKE
from tests.worker.test_celery_queues import serving
from worker.constants import BUILTIN_EMBEDDING_MODEL
from worker.process.fleet import MODEL_LOCK_KEY, LiveWorker, model_clash

EXIT_DEADLINE_S = 120.0
celery_worker = test_celery_queues.celery_worker  # its fixture: `celery -A worker.celery_app worker` with the fake


def test_the_rule_is_about_shared_queues_and_other_workers() -> None:
    fake_on_both = [LiveWorker("a@h", "fake", (QUEUE_REALTIME, QUEUE_BULK))]
    assert model_clash(fake_on_both, "b@h", "fake", [QUEUE_REALTIME]) is None  # the same model
    assert model_clash(fake_on_both, "a@h", "minilm-l6-int8", [QUEUE_REALTIME]) is None  # its own earlier life
    assert model_clash([LiveWorker("a@h", "fake", (QUEUE_BULK,))], "b@h", "minilm", [QUEUE_REALTIME]) is None
    clash = model_clash(fake_on_both, "b@h", "minilm", [QUEUE_BULK])
    assert clash is not None and "worker a@h serves with model fake" in clash and QUEUE_BULK in clash


def _exit_code(process: object) -> int:
    deadline = time.monotonic() + EXIT_DEADLINE_S
    while (code := process.poll()) is None:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, "the worker did not stop"
        time.sleep(0.05)
    return int(code)


def test_a_worker_with_another_model_refuses_to_join_a_served_queue(
    start_worker: WorkerFactory, client: Client, tmp_path: Path
) -> None:
    start_worker(**FAKE)
    (node,) = client.workers()
    second = start_worker(wait=False)  # the default model, on the same (default: both) queues
    assert _exit_code(second) == 2
    log = (tmp_path / "worker-1.log").read_text()
    errors = [line for line in log.splitlines() if "refusing to start" in line]
    assert len(errors) == 1 and "Traceback" not in log, log[-3000:]
    assert f"worker {node} serves with model fake" in errors[0] and QUEUE_REALTIME in errors[0]
    assert f"would serve model {BUILTIN_EMBEDDING_MODEL}" in errors[0]
    assert "loaded model" not in log  # refused before its model loaded
    assert list(client.workers()) == [node]
    # the same model beside it is fine
    start_worker(**FAKE)
    assert len(client.workers()) == 2


def test_two_starting_at_once_cannot_both_pass(start_worker: WorkerFactory, redis_url: str, tmp_path: Path) -> None:
    """A worker between its last check and its ready record holds the lock: one that checks then waits for it,
    and sees the record written meanwhile."""
    redis = redis_lib.Redis.from_url(redis_url)
    assert redis.set(MODEL_LOCK_KEY, "another starting worker", nx=True, ex=60)
    worker = start_worker(wait=False, **FAKE)
    log = tmp_path / "worker-0.log"
    deadline = time.monotonic() + EXIT_DEADLINE_S
    while b"model fake warm" not in log.read_bytes():  # checked once, before its model loaded; now at the lock
        assert worker.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.05)
    record = {"model": BUILTIN_EMBEDDING_MODEL, "revision": "r", "queues": [QUEUE_REALTIME], "pid": 1}
    redis.set(WORKER_KEY + "other@host", json.dumps(record), ex=30)  # the other one became ready
    redis.delete(MODEL_LOCK_KEY)
    assert _exit_code(worker) == 2
    assert f"which worker other@host serves with model {BUILTIN_EMBEDDING_MODEL}" in log.read_text()


def test_add_consumer_of_a_queue_served_by_another_model_is_refused(
    celery_worker: Callable[..., str], celery_app: Celery, client: Client, tmp_path: Path
) -> None:
    node = celery_worker("-Q", QUEUE_BULK)
    record = {"model": BUILTIN_EMBEDDING_MODEL, "revision": "r", "queues": [QUEUE_REALTIME], "pid": 1}
    client.redis.set(WORKER_KEY + "other@host", json.dumps(record), ex=30)
    celery_app.control.add_consumer(QUEUE_REALTIME, destination=[node], reply=True, timeout=5)
    log = tmp_path / f"{node}.log"
    deadline = time.monotonic() + 30
    while b"add_consumer labelq.realtime refused" not in log.read_bytes():
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.05)
    serving(celery_app, node, QUEUE_REALTIME, False)
    assert client.workers()[node]["queues"] == [QUEUE_BULK]
