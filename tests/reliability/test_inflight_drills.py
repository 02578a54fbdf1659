"""Issue 29's attacks end to end, on real workers: envelopes kombu could not restore and a shared delivery tag
in a batch killed in flight, and 10 MB messages among ordinary ones. Figures are printed for
docs/reliability.md."""

from __future__ import annotations

import json
import time

import pytest

from producer import Client
from schemas.transport import DEAD_LETTER_KEY, QUEUE_BULK, RESULT_KEY
from tests.conftest import WorkerFactory
from tests.reliability.test_reliability import FAKE
from tests.worker.test_streaming import raw_celery_message
from worker.stream.redis_queue import INFLIGHT_KEY

pytestmark = pytest.mark.reliability
SLOW = {**FAKE, "fake_model_run_ms": 100, "max_pairs_per_run": 4, "bulk_batch_size": 64, "bulk_max_wait_ms": 50}


def envelope(request_id: str, **properties: object) -> dict[str, object]:
    message = json.loads(raw_celery_message({"id": request_id, "text": "hi", "labels": ["a", "b"]}, QUEUE_BULK))
    message["properties"].update(properties)
    return message


def answered(client: Client, ids: list[str]) -> set[str]:
    pipe = client.redis.pipeline(transaction=False)
    for request_id in ids:
        pipe.exists(RESULT_KEY + request_id)
    return {request_id for request_id, found in zip(ids, pipe.execute(), strict=True) if found}


def test_a_batch_killed_in_flight_with_envelopes_kombu_could_not_restore(
    start_worker: WorkerFactory, client: Client
) -> None:
    """Before: a shared delivery tag kept 1 of 30; `delivery_info` as a string and `priority: 1e999` were
    dropped by kombu's restore; an envelope with a bare 0x10 in a header stopped kombu's sweep for everyone."""
    shared = [json.dumps(envelope(f"shared-{i}", delivery_tag="1")) for i in range(30)]
    valid = [
        json.dumps(envelope("info-string", delivery_info="x")),
        json.dumps(envelope("priority-inf")).replace('"priority": 0', '"priority": 1e999'),
        json.dumps({**envelope("type-tag"), "headers": {**envelope("type-tag")["headers"], "x": {"__type__": "no"}}}),
    ]
    poison = json.dumps(envelope("hex")).replace('"retries": 0', '"retries": 0x10')  # neither json nor kombu reads it
    want = [f"shared-{i}" for i in range(30)] + ["info-string", "priority-inf", "type-tag"]
    victim = start_worker(**SLOW)
    client.redis.lpush(QUEUE_BULK, *shared[:15], poison, *valid, *shared[15:])
    deadline = time.monotonic() + 10
    while not client.redis.hlen(INFLIGHT_KEY):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    victim.kill()
    victim.wait()
    held = client.redis.hlen(INFLIGHT_KEY)
    before = answered(client, want)
    killed_at = time.monotonic()
    start_worker(**SLOW)
    while answered(client, want) != set(want):
        assert time.monotonic() - killed_at < SLOW["visibility_timeout_s"] + 20, set(want) - answered(client, want)
        time.sleep(0.1)
    recovered_s = time.monotonic() - killed_at
    reasons = [json.loads(x)["reason"] for x in client.redis.lrange(DEAD_LETTER_KEY, 0, -1)]
    print(
        f"\nkilled in flight: {held} held, {len(before)} answered before the kill; all {len(want)} valid answered "
        f"{recovered_s:.1f} s after it (visibility timeout {SLOW['visibility_timeout_s']} s); dead letters {reasons}"
    )
    assert held == 34 and reasons == ["undecodable"]
    assert client.redis.hlen(INFLIGHT_KEY) == 0


@pytest.mark.slow
def test_large_messages_never_hold_up_ordinary_ones(start_worker: WorkerFactory, client: Client) -> None:
    """Before: a claim of 128 returned ~1.3 GB, its read timed out, the messages came back after the visibility
    timeout and timed out again, uncounted: 0 of 10 ordinary requests answered in 150 s, Redis held 1.3 GB."""
    start_worker(**FAKE)
    baseline = client.redis.info("memory")["used_memory"]
    text = "x" * 10_000_000
    ordinary = [f"ordinary-{i}" for i in range(10)]
    large = [f"large-{i}" for i in range(100)]
    for i, task_id in enumerate(large):
        raw = raw_celery_message({"id": task_id, "text": text, "labels": ["a", "b"]}, QUEUE_BULK, task_id=task_id)
        client.redis.lpush(QUEUE_BULK, raw)
        if i % 10 == 9:
            request_id = ordinary[i // 10]
            client.redis.lpush(
                QUEUE_BULK, raw_celery_message({"id": request_id, "text": "hi", "labels": ["a"]}, QUEUE_BULK)
            )
    pushed = time.monotonic()
    while answered(client, ordinary) != set(ordinary):
        assert time.monotonic() - pushed < 10, set(ordinary) - answered(client, ordinary)
        time.sleep(0.05)
    ordinary_s = time.monotonic() - pushed
    while answered(client, large) != set(large):
        assert time.monotonic() - pushed < 60
        time.sleep(0.1)
    codes = {json.loads(client.redis.get(RESULT_KEY + task_id))["code"] for task_id in large}
    settled = client.redis.info("memory")["used_memory"]
    print(
        f"\nlarge messages: 10 ordinary answered {ordinary_s:.1f} s after 100 x 10 MB were queued among them; "
        f"every large one {codes}; Redis used_memory {baseline / 1e6:.1f} MB before, {settled / 1e6:.1f} MB after"
    )
    assert codes == {"invalid_message"}
    assert settled < baseline + 20_000_000
