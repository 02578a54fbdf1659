"""Realtime stays realtime while a backfill runs: a realtime request that arrives during a bulk batch is served
between two of the batch's model runs, not after the whole batch (worker/process/loop.py, worker/engine/gate.py).

The `fake` model is given a time per run (LABELQ_FAKE_MODEL_RUN_MS), so a bulk batch lasts seconds and a run
a known 40 ms, whatever the machine."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time

import pytest

from producer import Client
from schemas import ClassificationResult, ClassifyRequest
from schemas.transport import QUEUE_REALTIME
from tests.conftest import WorkerFactory
from tests.reliability.test_reliability import drain_all
from worker import metrics
from worker.process.loop import BatchLoop, QueueWatcher
from worker.stream.batcher import Batcher, BatchPolicy
from worker.stream.redis_queue import INFLIGHT_INDEX_KEY, INFLIGHT_KEY

RUN_MS = 40
SLOW_FAKE = {
    "enable_fake_model": True,
    "model": "fake",
    "fake_model_run_ms": RUN_MS,
    "max_pairs_per_run": 4,  # a bulk batch of 200 requests: 50 runs, 2 s
    "bulk_batch_size": 200,
    "bulk_max_pairs": 1000,
    "bulk_max_wait_ms": 500,  # the 200 requests make one batch (it flushes when full)
}
BULK = 200


def _held_bulk_batch(
    start_worker: WorkerFactory, client: Client, tag: str, reply_to: str, **settings: object
) -> tuple[subprocess.Popen[bytes], list[str]]:
    """A bulk batch of BULK requests that a worker holds, claimed whole and running (4 s of 40 ms runs at two
    pairs a run), whatever the machine's load: the requests are queued before the worker starts, so its first claim
    takes all of them, and this returns once the ledger holds them all (not after a guessed sleep: on a loaded
    machine a sleep let the worker claim a part, finish it, and write results the drills assert are not there)."""
    bulk_ids = _bulk(client, tag, reply_to)
    worker = start_worker(**{**SLOW_FAKE, "max_pairs_per_run": 2, **settings})
    deadline = time.monotonic() + 60
    while client.redis.hlen(INFLIGHT_KEY) < BULK:
        assert time.monotonic() < deadline, f"the worker held {client.redis.hlen(INFLIGHT_KEY)} of {BULK}"
        assert worker.poll() is None, "the worker died"
        time.sleep(0.02)
    return worker, bulk_ids


def _bulk(client: Client, tag: str, reply_to: str, count: int = BULK) -> list[str]:
    requests = [
        ClassifyRequest(id=f"{tag}-{i}", text=f"refund for order {i}", labels=["refund", "bug"], reply_to=reply_to)
        for i in range(count)
    ]
    return client.submit_many(requests, queue="bulk")


def test_a_realtime_request_waits_one_model_run_not_a_bulk_batch(start_worker: WorkerFactory, client: Client) -> None:
    _, bulk_ids = _held_bulk_batch(start_worker, client, "backfill", "results:backfill")  # 4 s of runs
    latencies = []
    for i in range(3):
        started = time.monotonic()
        rid = client.submit(ClassifyRequest(id=f"rt-{i}", text="I want a refund", labels=["refund", "bug"]))
        result = client.wait(rid, timeout_s=30)
        latencies.append(time.monotonic() - started)
        assert isinstance(result, ClassificationResult) and result.top == "refund"
        assert client.redis.llen("results:backfill") == 0, "the bulk batch was over before realtime was served"
    # one run (40 ms) plus the realtime batch's own wait and a round trip; a bulk batch would be 4,000 ms
    assert max(latencies) < 0.5, latencies
    seen = drain_all(client, "results:backfill", set(bulk_ids), timeout_s=60)
    assert set(seen) == set(bulk_ids) and max(seen.values()) == 1  # the bulk batch itself is whole, once


def test_a_realtime_stream_beside_bulk_batches_never_waits_for_the_watcher(
    start_worker: WorkerFactory, client: Client, redis_url: str
) -> None:
    """Found by bench/mixed_load.py: a poll that claimed realtime work and then ran a bulk batch left the realtime
    watcher waiting for the end of that poll, so realtime that arrived meanwhile went unseen for up to a second
    (the watcher's wait). Realtime every 50 ms beside a backlog of three bulk batches, run back to back: none
    waits more than a run and its own batch."""
    start_worker(**SLOW_FAKE)
    stream = [
        ClassifyRequest(id=f"stream-{i}", text="I want a refund", labels=["refund", "bug"], reply_to="results:stream")
        for i in range(120)
    ]
    sent: dict[str, float] = {}
    arrived: dict[str, float] = {}

    def read() -> None:
        with Client(redis_url) as reader:
            while len(arrived) < len(stream):
                popped = reader.redis.blpop(["results:stream"], timeout=30)
                if popped is None:
                    return
                arrived[json.loads(popped[1])["id"]] = time.monotonic()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    bulk_ids: list[str] = []
    for i, request in enumerate(stream):
        if i == 5:  # three bulk batches (6 s of runs) while the stream goes on
            bulk_ids += _bulk(client, "beside", "results:beside", count=3 * BULK)
        sent[request.id] = time.monotonic()
        client.submit(request)
        time.sleep(0.05)
    reader.join(timeout=60)
    waits = sorted(arrived[rid] - sent[rid] for rid in sent if rid in arrived)
    assert len(waits) == len(stream)
    assert waits[-1] < 0.5, waits[-5:]  # one 40 ms run and a realtime batch, not the watcher's 1 s
    assert len(drain_all(client, "results:beside", set(bulk_ids), timeout_s=60)) == len(bulk_ids)


def test_with_no_realtime_traffic_a_bulk_batch_is_not_interrupted(start_worker: WorkerFactory, client: Client) -> None:
    worker = start_worker(**SLOW_FAKE, metrics_port=0)
    bulk_ids = _bulk(client, "alone", "results:alone")
    seen = drain_all(client, "results:alone", set(bulk_ids), timeout_s=60)
    assert set(seen) == set(bulk_ids) and worker.poll() is None


@pytest.mark.reliability
@pytest.mark.slow
def test_sigkill_during_a_bulk_batch_interrupted_by_realtime_work(start_worker: WorkerFactory, client: Client) -> None:
    """The drill of issue 22: realtime requests served between the runs of a bulk batch, then the worker is
    SIGKILLed before the bulk batch ends. Nothing is lost; a repeat is a duplicate by id at most."""
    drill = {**SLOW_FAKE, "visibility_timeout_s": 60, "unacked_restore_interval_s": 1}
    victim, bulk_ids = _held_bulk_batch(start_worker, client, "killed", "results:killed", **drill)
    realtime_ids = []
    for i in range(5):
        realtime_ids.append(
            client.submit(
                ClassifyRequest(
                    id=f"rt-kill-{i}", text="a bug in the app", labels=["refund", "bug"], reply_to="results:rt"
                )
            )
        )
        time.sleep(0.1)
    served = drain_all(client, "results:rt", set(realtime_ids), timeout_s=10)
    bulk_done_before_kill = client.redis.llen("results:killed")
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    unacked = client.redis.hlen(INFLIGHT_KEY)
    assert set(served) == set(realtime_ids) and bulk_done_before_kill == 0  # realtime answered mid-batch
    assert unacked == BULK  # the bulk batch was held, unacked, when the worker died; realtime was acked
    # a visibility timeout of 60 s holds the dead worker's messages; the drill restores them as the timeout would
    client.redis.zadd(INFLIGHT_INDEX_KEY, dict.fromkeys(client.redis.hkeys(INFLIGHT_KEY), 0))
    start_worker(**drill)
    seen = drain_all(client, "results:killed", set(bulk_ids), timeout_s=120)
    missing = set(bulk_ids) - set(seen)
    print(
        f"\nbetween-runs kill drill: {len(realtime_ids)} realtime answered mid-batch, {unacked} bulk unacked at "
        f"the kill; after restart {len(seen)} bulk answered, {sum(n - 1 for n in seen.values())} duplicates, "
        f"{len(missing)} lost"
    )
    assert not missing
    assert client.redis.llen("results:rt") == 0  # realtime work was acked when answered: never answered twice


def test_claiming_a_queue_lets_its_watcher_watch_again_at_once() -> None:
    """The cause of the stall above: the watcher waits until its queue is claimed before it looks again; the
    claim must release it then, not at the end of the poll (which may go on to run a bulk batch for seconds)."""
    from types import SimpleNamespace

    step, watcher = _step_with_a_waiting_realtime_queue()  # the watcher woke the loop and waits for the claim
    step.queue = SimpleNamespace(claim=lambda queue, count: [])  # type: ignore[assignment]
    step._claim(QUEUE_REALTIME)
    assert watcher.claimed.is_set() and not watcher.pending.is_set()


def test_realtime_work_that_arrives_while_realtime_is_served_goes_before_the_next_run() -> None:
    """Found by the mixed-load bench: after serving realtime work between two runs, the worker went back to the
    bulk batch even when more realtime had arrived meanwhile, so that request waited for a bulk run (tens to
    hundreds of ms) it need not have. Here the first realtime flush sees one more arrive: both are served
    before the batch's next run."""
    step, watcher = _step_with_a_waiting_realtime_queue()
    step._allowance_left_s = 30.0
    flushed: list[int] = []
    step._claim = lambda queue: watcher.pending.clear()  # type: ignore[method-assign]

    def flush(queue: str) -> None:
        flushed.append(len(flushed))
        if len(flushed) == 1:  # one more arrives while the first is served
            watcher.pending.set()

    step.flush = flush  # type: ignore[method-assign]
    step._between_bulk_runs()
    assert flushed == [0, 1] and not watcher.pending.is_set()


def test_realtime_between_runs_stops_when_the_batchs_allowance_is_spent() -> None:
    step, watcher = _step_with_a_waiting_realtime_queue()
    step._allowance_left_s = 0.05
    flushed: list[int] = []
    step._claim = lambda queue: None  # type: ignore[method-assign]

    def flush(queue: str) -> None:  # realtime keeps arriving: the queue stays non-empty
        flushed.append(1)
        time.sleep(0.02)

    step.flush = flush  # type: ignore[method-assign]
    step._between_bulk_runs()
    assert 2 <= len(flushed) <= 4 and watcher.pending.is_set()  # served until the allowance ran out, not forever


def test_the_time_realtime_work_takes_from_a_bulk_batch_is_counted() -> None:
    """What realtime traffic costs a backfill is visible to an operator: the seconds the bulk batch was paused."""
    step, watcher = _step_with_a_waiting_realtime_queue()
    step._allowance_left_s = 30.0
    step._claim = lambda queue: watcher.pending.clear()  # type: ignore[method-assign]
    step.flush = lambda queue: time.sleep(0.05)  # type: ignore[method-assign]
    before = metrics.BETWEEN_RUNS_SECONDS._value.get()
    step._between_bulk_runs()
    assert 0.05 <= metrics.BETWEEN_RUNS_SECONDS._value.get() - before < 1.0


def _step_with_a_waiting_realtime_queue() -> tuple[BatchLoop, QueueWatcher]:
    """The batch loop's realtime part alone, its watcher having seen the queue non-empty."""
    step = BatchLoop.__new__(BatchLoop)
    step._stopping = threading.Event()
    policy = BatchPolicy(QUEUE_REALTIME, 16, 256, 0.005)
    watcher = QueueWatcher.__new__(QueueWatcher)
    watcher.queue, watcher.claimed, watcher.pending = QUEUE_REALTIME, threading.Event(), threading.Event()
    watcher.pending.set()
    step._watchers = [watcher]
    step.policies, step.batchers = {QUEUE_REALTIME: policy}, {QUEUE_REALTIME: Batcher(policy)}
    step.serving = frozenset({QUEUE_REALTIME})  # the queues it claims (all, unless -Q or cancel_consumer said so)
    return step, watcher


def test_a_batch_loop_that_fails_on_a_bug_stops_the_worker_instead_of_looking_alive() -> None:
    import queue as queues

    loop = BatchLoop.__new__(BatchLoop)
    loop.policies, loop.batchers, loop.serving = {}, {}, frozenset()
    loop._watchers, loop._held, loop._held_lock = [], {"1.0": None}, threading.Lock()
    loop._wake, loop._stopping, loop.exited = threading.Event(), threading.Event(), threading.Event()
    loop._commands = queues.SimpleQueue()
    loop._spans = {}  # the requests' trace spans by tag (none: tracing is off)
    released: list[list[str]] = []
    failures: list[int] = []

    class Ledger:
        def release(self, tags: list[str], counted: object = ()) -> int:
            released.append(list(tags))
            return len(tags)

    loop.queue = Ledger()  # type: ignore[assignment]
    loop._on_failure = lambda: failures.append(1)
    loop._command(lambda: 1 / 0)  # a bug in the loop
    loop.run()
    assert failures == [1] and released == [["1.0"]] and loop.exited.is_set()  # what it held went back
