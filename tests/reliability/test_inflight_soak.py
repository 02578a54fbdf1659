"""A randomized fault soak over the in-flight ledger: a steady stream of good requests with issue 29's poisons
interleaved (oversize messages, envelopes Python cannot read, shared delivery tags, a corrupt stored label set,
forged ledger entries), while the worker is SIGKILLed and replaced at random. Every good request must be
answered; nothing may stay in flight. Figures are printed for docs/reliability.md."""

from __future__ import annotations

import json
import random
import time
from collections import Counter

import pytest

from producer import Client
from schemas.transport import DEAD_LETTER_KEY, QUEUE_BULK, QUEUE_REALTIME
from tests.conftest import WorkerFactory
from tests.reliability.test_inflight_drills import answered, envelope
from tests.reliability.test_reliability import FAKE
from worker.stream.labelsets import LABELSET_KEY
from worker.stream.redis_queue import INFLIGHT_INDEX_KEY, INFLIGHT_KEY

pytestmark = [pytest.mark.reliability, pytest.mark.slow]
SOAK_S = 60.0
KILL_EVERY_S = (5.0, 12.0)
SETTINGS = {**FAKE, "fake_model_run_ms": 20, "max_pairs_per_run": 8, "max_message_bytes": 1_000_000}


def poison(rng: random.Random, n: int) -> tuple[str, bytes]:
    """One poison: its kind, and the bytes to queue (none for the kinds not sent as a queued envelope)."""
    kind = rng.choice(["oversize", "hex header", "not json", "corrupt label set", "forged ledger entry"])
    if kind == "oversize":
        message = envelope(f"big-{n}")
        message["headers"]["pad"] = "x" * 1_500_000
        return kind, json.dumps(message).encode()
    if kind == "hex header":
        return kind, json.dumps(envelope(f"hex-{n}")).replace('"retries": 0', '"retries": 0x10').encode()
    if kind == "not json":
        return kind, b"\xff\xfe{" + bytes(rng.randrange(256) for _ in range(40))
    return kind, b""


def test_a_stream_with_poisons_through_random_kills(start_worker: WorkerFactory, client: Client) -> None:
    rng = random.Random(29)
    client.redis.set(LABELSET_KEY + "broken", b"[" * 100_000 + b"]" * 100_000)
    worker = start_worker(**SETTINGS)
    good: list[str] = []
    sent: Counter[str] = Counter()
    kills = 0
    started = time.monotonic()
    next_kill = started + rng.uniform(*KILL_EVERY_S)
    n = 0
    while time.monotonic() - started < SOAK_S:
        n += 1
        queue = rng.choice([QUEUE_REALTIME, QUEUE_BULK])
        shared_tag = rng.random() < 0.3
        batch = []
        for i in range(5):
            request_id = f"g{n}-{i}"
            message = envelope(request_id, delivery_tag="1") if shared_tag else envelope(request_id)
            message["properties"]["delivery_info"]["routing_key"] = queue
            batch.append(json.dumps(message).encode())
            good.append(request_id)
        if rng.random() < 0.5:
            kind, raw = poison(rng, n)
            sent[kind] += 1
            if kind == "forged ledger entry":
                client.redis.hset(INFLIGHT_KEY, f"forged-{n}", b"not-a-list\nforged")
                client.redis.zadd(INFLIGHT_INDEX_KEY, {f"forged-{n}": 0})
            elif kind == "corrupt label set":
                body = {"id": f"set-{n}", "text": "hi", "label_set": "broken"}
                client.submit(body, queue="realtime")
            else:
                batch.insert(rng.randrange(len(batch) + 1), raw)
        client.redis.lpush(queue, *batch)
        if time.monotonic() >= next_kill:
            assert worker.poll() is None, "the worker exited on its own"
            worker.kill()
            worker.wait()
            kills += 1
            worker = start_worker(**SETTINGS)
            next_kill = time.monotonic() + rng.uniform(*KILL_EVERY_S)
        time.sleep(0.05)
    sent_s = time.monotonic() - started
    deadline = time.monotonic() + SETTINGS["visibility_timeout_s"] + 60
    while (missing := set(good) - answered(client, good)) and time.monotonic() < deadline:
        time.sleep(0.5)
    while client.redis.hlen(INFLIGHT_KEY) and time.monotonic() < deadline:
        time.sleep(0.5)
    reasons = Counter(json.loads(x)["reason"] for x in client.redis.lrange(DEAD_LETTER_KEY, 0, -1))
    print(
        f"\nsoak: {len(good)} good requests over {sent_s:.0f} s with poisons {dict(sent)}, {kills} SIGKILLs; "
        f"{len(good) - len(missing)} answered, {len(missing)} missing; dead letters {dict(reasons)}; "
        f"in flight at the end {client.redis.hlen(INFLIGHT_KEY)}"
    )
    assert not missing and kills >= 3
    assert client.redis.hlen(INFLIGHT_KEY) == 0
    assert worker.poll() is None
