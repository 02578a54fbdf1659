"""A labelq worker among Celery's own machinery, with real processes: warm and cold shutdown during a bulk
backlog (SIGTERM, SIGQUIT, `control.shutdown`), and control commands and heartbeats answered while batches run."""

from __future__ import annotations

import itertools
import signal
import socket
import subprocess
import threading
import time
from typing import Any

import pytest
from celery import Celery

from producer import Client
from schemas import ClassifyRequest, parse_result
from schemas.transport import QUEUE_BULK
from tests.conftest import WorkerFactory
from tests.worker.test_streaming import wait_for_length
from worker.stream.redis_queue import INFLIGHT_KEY, ReliableQueue

BACKLOG = 3000
SLOW_FAKE = {
    "enable_fake_model": True,
    "model": "fake",
    "fake_model_run_ms": 100,  # a run of 8 pairs: 100 ms; a bulk batch of 256 requests x 2 labels: 64 runs, 6.4 s
    "max_pairs_per_run": 8,
    "bulk_batch_size": 256,
    "bulk_max_pairs": 512,
    "bulk_max_wait_ms": 50,
    "realtime_max_pairs": 64,
    "visibility_timeout_s": 60,
    "celery_events": True,
}
pytestmark = pytest.mark.slow


def _backlog(client: Client, reply_to: str, count: int = BACKLOG) -> set[str]:
    requests = [
        ClassifyRequest(id=f"b-{i}", text=f"refund {i}", labels=["refund", "bug"], reply_to=reply_to)  # type: ignore[arg-type]
        for i in range(count)
    ]
    client.submit_many(requests, queue="bulk")
    return {str(r.id) for r in requests}


def _queued(client: Client) -> int:
    return ReliableQueue(client.redis).waiting(QUEUE_BULK)  # the plain list and its priority lists


def _answered(client: Client, queue: str) -> int:
    return int(client.redis.llen(queue))


def _exit_after(process: subprocess.Popen[bytes], signum: int) -> tuple[int, float]:
    started = time.monotonic()
    process.send_signal(signum)
    code = process.wait(timeout=60)
    return code, time.monotonic() - started


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGQUIT], ids=["SIGTERM", "SIGQUIT"])
def test_a_signal_during_a_bulk_batch_ends_it_and_hands_back_what_is_held(
    start_worker: WorkerFactory, client: Client, signum: int
) -> None:
    worker = start_worker(**SLOW_FAKE)
    _backlog(client, "results:stop")
    deadline = time.monotonic() + 60
    while not client.redis.hlen(INFLIGHT_KEY) and time.monotonic() < deadline:  # a batch is claimed and running
        time.sleep(0.05)
    time.sleep(1.0)  # ... some runs into it
    held = int(client.redis.hlen(INFLIGHT_KEY))
    code, exit_s = _exit_after(worker, signum)
    answered, queued, left = _answered(client, "results:stop"), _queued(client), client.redis.hlen(INFLIGHT_KEY)
    print(
        f"\n{signal.Signals(signum).name} with {held} held and {BACKLOG - held} queued: exit {code} after "
        f"{exit_s:.1f} s; {answered} answered, {queued} back on the queue, {left} left in the ledger"
    )
    assert held > 0 and code == 0
    assert exit_s < 5  # one model run (0.1 s) and the hand-back, never the batch (6.4 s) nor the backlog
    assert left == 0  # nothing of the worker's is left for a visibility timeout
    assert answered + queued == BACKLOG  # the held batch went back to the queue; nothing lost
    assert answered < held  # the bulk batch in progress was not finished


def test_control_shutdown_is_a_warm_shutdown(start_worker: WorkerFactory, client: Client, celery_app: Celery) -> None:
    worker = start_worker(**SLOW_FAKE)
    _backlog(client, "results:control")
    while not client.redis.hlen(INFLIGHT_KEY):
        time.sleep(0.05)
    started = time.monotonic()
    celery_app.control.shutdown(destination=["test-0@" + _host()])
    code = worker.wait(timeout=60)
    exit_s = time.monotonic() - started
    print(f"\ncontrol.shutdown during a bulk batch: exit {code} after {exit_s:.1f} s")
    assert code == 0 and exit_s < 5
    assert client.redis.hlen(INFLIGHT_KEY) == 0
    assert _answered(client, "results:control") + _queued(client) == BACKLOG


def test_what_a_stopped_worker_handed_back_is_answered_by_the_next(start_worker: WorkerFactory, client: Client) -> None:
    worker = start_worker(**{**SLOW_FAKE, "fake_model_run_ms": 10})
    ids = _backlog(client, "results:next", 1000)
    wait_for_length(client, "results:next", 100, timeout_s=60)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0
    start_worker(**{**SLOW_FAKE, "fake_model_run_ms": 0})
    wait_for_length(client, "results:next", 1000, timeout_s=120)
    got = [str(parse_result(raw).id) for raw in client.redis.lrange("results:next", 0, -1)]
    assert len(got) == 1000 and set(got) == ids  # each answered once: handed back unanswered, never twice


def test_ping_inspect_and_heartbeats_are_answered_while_batches_run(
    start_worker: WorkerFactory, client: Client, celery_app: Celery
) -> None:
    start_worker(**SLOW_FAKE)
    name = "test-0@" + _host()
    beats: list[float] = []
    processed: list[int] = []

    def on_heartbeat(event: dict[str, Any]) -> None:
        if event.get("hostname") == name:
            beats.append(time.monotonic())
            processed.append(int(event.get("processed") or 0))

    connection = celery_app.connection()
    receiver = celery_app.events.Receiver(connection, handlers={"worker-heartbeat": on_heartbeat})
    # Celery's own event receiver, as Flower runs it; it stops when `should_stop` is set
    listener = threading.Thread(target=receiver.capture, kwargs={"limit": None, "wakeup": False}, daemon=True)
    listener.start()
    _backlog(client, "results:busy")
    while not client.redis.hlen(INFLIGHT_KEY):
        time.sleep(0.05)
    window_started = time.monotonic()
    answered = active_seen = tries = 0
    while time.monotonic() - window_started < 12:  # two bulk batches and more
        tries += 1
        answered += bool(celery_app.control.ping(destination=[name], timeout=1))
        active = celery_app.control.inspect(destination=[name], timeout=1).active() or {}
        active_seen += bool(active.get(name))
        time.sleep(0.2)
    window_s = time.monotonic() - window_started
    stats = celery_app.control.inspect(destination=[name], timeout=2).stats() or {}
    receiver.should_stop = True
    listener.join(10)
    connection.close()
    in_window = [t for t in beats if t >= window_started - 2]
    gaps = [b - a for a, b in itertools.pairwise(in_window)]
    print(
        f"\nduring a bulk backlog ({window_s:.0f} s): ping answered {answered}/{tries}, inspect active listed tasks "
        f"{active_seen}/{tries}, {len(in_window)} heartbeats, longest gap {max(gaps, default=0):.1f} s; "
        f"stats total {stats.get(name, {}).get('total')}, heartbeat processed up to {max(processed, default=0)}"
    )
    assert answered == tries
    assert active_seen >= tries * 0.8  # between two batches there may be none running
    assert gaps and max(gaps) <= 4.0  # Celery's heartbeat is every 2 s: never two missed
    assert stats[name]["total"].get("labelq.classify", 0) > 0
    assert max(processed) > 0  # heartbeats count classifications (Flower's "processed")


def _host() -> str:
    return socket.gethostname()
