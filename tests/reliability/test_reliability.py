"""The reliability suite's bulk drills: a 20,000-request burst through a worker killed and restarted, and
10,000 fuzzed messages. They use the deterministic `fake` model: what is under test is the message path."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from producer import Client
from schemas import ClassificationResult, ClassifyRequest, parse_result
from schemas.transport import DEAD_LETTER_KEY, QUEUE_BULK, QUEUE_REALTIME, RESULT_KEY
from tests.conftest import WorkerFactory
from tests.worker.test_streaming import kill_while_holding, raw_celery_message, wait_for_length
from worker.stream.redis_queue import INFLIGHT_KEY

pytestmark = [pytest.mark.reliability, pytest.mark.slow]
FAKE = {
    "enable_fake_model": True,
    "model": "fake",
    "visibility_timeout_s": 6,
    "unacked_restore_interval_s": 1,
    "bulk_batch_size": 32,
    "bulk_max_pairs": 100,
    "realtime_max_pairs": 100,
}


def drain_all(client: Client, queue: str, want: set[str], timeout_s: float) -> Counter[str]:
    seen: Counter[str] = Counter()
    deadline = time.monotonic() + timeout_s
    while not want <= set(seen) and time.monotonic() < deadline:
        chunk = client.redis.lpop(queue, 500)
        if not chunk:
            time.sleep(0.05)
            continue
        for raw in chunk:  # type: ignore[union-attr]
            seen[str(parse_result(raw).id)] += 1
    return seen


def test_burst_of_20000_through_a_kill_and_restart(start_worker: WorkerFactory, client: Client) -> None:
    victim = start_worker(**FAKE)
    batch = [
        ClassifyRequest(
            id=f"burst-{i}",
            text=f"refund for order {i}",
            labels=["refund", "bug", "praise"],  # type: ignore[arg-type]
            reply_to="results:burst",
        )
        for i in range(20_000)
    ]
    started = time.monotonic()
    client.submit_many(batch, queue="bulk")
    submitted_s = time.monotonic() - started
    wait_for_length(client, "results:burst", 3000, timeout_s=300)
    unacked = kill_while_holding(victim, client)
    start_worker(**FAKE)
    seen = drain_all(client, "results:burst", {r.id for r in batch}, timeout_s=600)
    missing = {r.id for r in batch} - set(seen)
    print(
        f"\nburst: 20000 sent in {submitted_s:.1f} s; worker SIGKILLed after 3000 results with {unacked} unacked; "
        f"{len(seen)} answered in {time.monotonic() - started:.1f} s; "
        f"{sum(n - 1 for n in seen.values())} duplicates; {len(missing)} lost"
    )
    assert unacked > 0
    assert not missing


# --- fuzz -----------------------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
LABEL = st.one_of(
    st.text(max_size=12),
    st.integers(),
    st.none(),
    st.fixed_dictionaries({"name": st.text(max_size=12)}, optional={"threshold": JSON, "x": JSON}),
)
REQUEST_LIKE = st.fixed_dictionaries(
    {},
    optional={
        "text": st.one_of(st.text(max_size=200), JSON, st.just("x" * 1_048_576)),  # up to a megabyte
        "labels": st.one_of(st.lists(LABEL, max_size=6), JSON, st.just([f"l{i}" for i in range(3000)])),
        "multi_label": JSON,
        "thresholds": JSON,
        "hypothesis_template": st.one_of(st.text(max_size=30), JSON),
        "reply_to": st.one_of(st.text(max_size=30), JSON),
        "metadata": JSON,
        "deadline": st.one_of(st.text(max_size=30), JSON),
        "surprise": JSON,
    },
)
BODY = st.one_of(
    REQUEST_LIKE.map(lambda r: ("request", r)),
    JSON.map(lambda j: ("args", j)),  # anything as the task argument
    st.binary(max_size=300).map(lambda b: ("bytes", b)),  # invalid UTF-8, not JSON
    st.integers(min_value=100, max_value=50_000).map(lambda depth: ("bytes", b"[" * depth + b"]" * depth)),
)


def envelope(kind: str, value: Any, task_id: str) -> str:
    if kind == "request" and isinstance(value, dict):
        value = {**value, "id": task_id}  # so every answer can be matched to its message
    message = json.loads(raw_celery_message({}, QUEUE_REALTIME, task_id))
    body = value if kind == "bytes" else json.dumps([[value], {}, {}]).encode()
    message["body"] = base64.b64encode(body).decode()
    return json.dumps(message)


def test_10000_fuzzed_messages_are_each_answered_or_dead_lettered(start_worker: WorkerFactory, client: Client) -> None:
    worker = start_worker(**{**FAKE, "max_labels": 100})
    sent: list[str] = []

    @settings(
        max_examples=200,
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )
    @given(st.lists(BODY, min_size=50, max_size=50))
    def push(bodies: list[tuple[str, Any]]) -> None:
        pipe = client.redis.pipeline(transaction=False)
        for kind, value in bodies:
            task_id = uuid.uuid4().hex
            sent.append(task_id)
            pipe.lpush(QUEUE_REALTIME if len(sent) % 2 else QUEUE_BULK, envelope(kind, value, task_id))
        pipe.execute()

    started = time.monotonic()
    push()
    assert len(sent) == 10_000
    deadline = time.monotonic() + 600
    while (
        client.redis.llen(QUEUE_REALTIME) or client.redis.llen(QUEUE_BULK) or client.redis.hlen(INFLIGHT_KEY)
    ) and time.monotonic() < deadline:
        assert worker.poll() is None, "the worker crashed"
        time.sleep(0.2)
    letters = [json.loads(x) for x in client.redis.lrange(DEAD_LETTER_KEY, 0, -1)]
    dead_ids = {(d.get("headers") or {}).get("id") or d.get("message_id") for d in letters}
    answered = {task_id for task_id in sent if client.redis.exists(RESULT_KEY + task_id)}
    unaccounted = [t for t in sent if t not in answered and t not in dead_ids]
    reasons = Counter(d["reason"] for d in letters)
    codes = Counter(
        json.loads(client.redis.get(RESULT_KEY + t))["code"]
        for t in answered  # type: ignore[arg-type]
        if json.loads(client.redis.get(RESULT_KEY + t)).get("status") == "error"
    )  # type: ignore[arg-type]
    print(
        f"\nfuzz: {len(sent)} messages in {time.monotonic() - started:.1f} s; {len(answered)} answered by id, "
        f"{len(letters)} dead letters {dict(reasons)}; error codes {dict(codes.most_common(8))}; "
        f"{len(unaccounted)} unaccounted; worker alive: {worker.poll() is None}"
    )
    assert worker.poll() is None
    assert not unaccounted
    ok = client.wait(client.submit(ClassifyRequest(text="refund please", labels=["refund", "bug"])), timeout_s=30)  # type: ignore[arg-type]
    assert isinstance(ok, ClassificationResult) and ok.top == "refund"  # and it still works
