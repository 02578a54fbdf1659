"""labelq's request queues as Celery users name them: `worker -Q`, `add_consumer`, `cancel_consumer`,
`inspect active_queues`, and kombu's priority sub-lists (`send_task(..., priority=p)`)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from producer import Client
from schemas.transport import QUEUE_BULK, QUEUE_REALTIME
from tests.conftest import WorkerFactory
from tests.worker.test_celery_native import FAKE, REQUEST
from worker.stream.redis_queue import INFLIGHT_KEY, ReliableQueue

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def celery_worker(redis_url: str, tmp_path: Path, client: Client) -> Iterator[Callable[..., str]]:
    """`celery -A worker.celery_app worker ARGS...` with the fake model; returns its node name once ready."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> str:
        node = f"celery-{len(started)}@test"
        env = {**os.environ, "LABELQ_REDIS_URL": redis_url, "PYTHONPATH": str(ROOT)}
        env.update({f"LABELQ_{k.upper()}": json.dumps(v) if not isinstance(v, str) else v for k, v in FAKE.items()})
        log_path = tmp_path / f"{node}.log"
        command = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "-n", node, *args]
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [*command, "--without-mingle", "--without-gossip", "--loglevel", "INFO"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started.append(process)
        deadline = time.monotonic() + 60
        while node not in client.workers():
            assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()[-4000:]
            time.sleep(0.05)
        return node

    yield start
    for process in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def send(app: Celery, queue: str, n: int, **options: Any) -> list[Any]:
    return [
        app.send_task("labelq.classify", args=[{**REQUEST, "text": f"refund {i}"}], queue=queue, **options)
        for i in range(n)
    ]


def test_worker_dash_q_serves_the_named_labelq_queue_with_the_batching_step(
    celery_worker: Callable[..., str], celery_app: Celery, client: Client
) -> None:
    node = celery_worker("-Q", QUEUE_REALTIME)
    answers = [r.get(timeout=30) for r in send(celery_app, QUEUE_REALTIME, 20)]
    assert [a["status"] for a in answers] == ["ok"] * 20
    assert client.workers()[node]["queues"] == [QUEUE_REALTIME]  # -Q dedicates it: bulk is not its work
    send(celery_app, QUEUE_BULK, 1)
    time.sleep(1.5)
    assert client.redis.llen(QUEUE_BULK) == 1


def test_add_and_cancel_consumer_start_and_stop_labelq_claiming(
    start_worker: WorkerFactory, celery_app: Celery, client: Client
) -> None:
    start_worker(**FAKE)
    (node,) = client.workers()
    control = celery_app.control
    replies = control.add_consumer(QUEUE_REALTIME, destination=[node], reply=True, timeout=5)
    assert replies and "error" not in replies[0][node], replies
    answers = [r.get(timeout=30) for r in send(celery_app, QUEUE_REALTIME, 10)]  # not taken by Celery's consumer
    assert [a["status"] for a in answers] == ["ok"] * 10

    queues = control.inspect(destination=[node], timeout=5).active_queues()[node]
    assert {QUEUE_REALTIME, QUEUE_BULK} <= {q["name"] for q in queues}

    replies = control.cancel_consumer(QUEUE_REALTIME, destination=[node], reply=True, timeout=5)
    assert replies and "ok" in replies[0][node], replies
    serving(celery_app, node, QUEUE_REALTIME, False)  # Celery replies before it acts (call_soon)
    (waiting,) = send(celery_app, QUEUE_REALTIME, 1)
    time.sleep(1.5)
    assert client.redis.llen(QUEUE_REALTIME) == 1 and not waiting.ready()
    queues = control.inspect(destination=[node], timeout=5).active_queues()[node]
    assert QUEUE_REALTIME not in {q["name"] for q in queues}

    control.add_consumer(QUEUE_REALTIME, destination=[node], reply=True, timeout=5)
    assert waiting.get(timeout=30)["status"] == "ok"


def serving(celery_app: Celery, node: str, queue: str, expected: bool) -> None:
    """Wait until `inspect active_queues` says whether `node` claims `queue` as expected."""
    deadline = time.monotonic() + 10
    while True:
        queues = celery_app.control.inspect(destination=[node], timeout=5).active_queues() or {}
        if (queue in {q["name"] for q in queues.get(node, [])}) == expected:
            return
        assert time.monotonic() < deadline, queues
        time.sleep(0.1)


@pytest.mark.parametrize("priority", [0, 3, 5, 9])
def test_prioritised_requests_are_answered(start_worker: WorkerFactory, celery_app: Celery, priority: int) -> None:
    start_worker(**FAKE)
    answers = [r.get(timeout=30) for r in send(celery_app, QUEUE_REALTIME, 3, priority=priority)]
    assert [a["status"] for a in answers] == ["ok"] * 3


def test_a_claimed_priority_message_comes_back_after_its_worker_died(
    start_worker: WorkerFactory, celery_app: Celery, client: Client
) -> None:
    (result,) = send(celery_app, QUEUE_REALTIME, 1, priority=6)
    dead = ReliableQueue(client.redis).claim(QUEUE_REALTIME, 10)  # a worker that claimed it, then was killed
    assert [m.tag for m in dead] and client.redis.hlen(INFLIGHT_KEY) == 1
    start_worker(**FAKE, visibility_timeout_s=3, unacked_restore_interval_s=1, realtime_max_pairs=20, bulk_max_pairs=20)
    assert result.get(timeout=30)["status"] == "ok"


def test_a_request_revoked_before_it_is_taken_is_not_classified(
    start_worker: WorkerFactory, celery_app: Celery, client: Client
) -> None:
    start_worker(**FAKE)
    (node,) = client.workers()
    celery_app.control.cancel_consumer(QUEUE_REALTIME, destination=[node], reply=True, timeout=5)
    serving(celery_app, node, QUEUE_REALTIME, False)  # Celery replies before it acts (call_soon)
    revoked, kept = send(celery_app, QUEUE_REALTIME, 2)
    celery_app.control.revoke(revoked.id, destination=[node], reply=True, timeout=5)
    celery_app.control.add_consumer(QUEUE_REALTIME, destination=[node], reply=True, timeout=5)
    assert kept.get(timeout=30)["status"] == "ok"
    deadline = time.monotonic() + 10
    while revoked.state != "REVOKED":
        assert time.monotonic() < deadline, revoked.state
        time.sleep(0.1)
    time.sleep(0.5)
    assert revoked.state == "REVOKED" and not client.redis.exists(f"labelq:result:{revoked.id}")
    assert client.redis.llen(QUEUE_REALTIME) == 0 and client.redis.hlen(INFLIGHT_KEY) == 0


def test_celery_purge_without_q_empties_labelqs_queues_and_their_priority_lists(
    redis_url: str, celery_app: Celery, client: Client
) -> None:
    for queue in (QUEUE_REALTIME, QUEUE_BULK):
        for priority in (0, 9):  # 9: kombu's sub-list of the queue
            celery_app.send_task("labelq.classify", args=[REQUEST], queue=queue, priority=priority)
    lists = ReliableQueue(client.redis)
    assert lists.waiting(QUEUE_REALTIME) == lists.waiting(QUEUE_BULK) == 2
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "worker.celery_app", "purge", "-f"],
        env={**os.environ, "LABELQ_REDIS_URL": redis_url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and "Purged 4 messages" in done.stdout, done.stdout + done.stderr
    assert lists.waiting(QUEUE_REALTIME) == lists.waiting(QUEUE_BULK) == 0
