"""Hostile-message drills: whole kombu envelopes generated at random (properties, headers, body, content types,
encodings, ids, reply queues), 20,000 a run, each chunk followed by a good request that must be answered
promptly; and cost bombs against the real embedded model. Asserts every worker alive, every message settled
(nothing left unacked), no key written outside what requests may touch, memory bounded. Figures printed for
docs/reliability.md."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections import Counter
from typing import Any

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from producer import Client
from schemas import ClassificationResult, ClassifyRequest, ErrorResult
from schemas.transport import DEAD_LETTER_KEY, QUEUE_BULK, QUEUE_REALTIME, RESULT_KEY
from tests.conftest import WorkerFactory
from tests.reliability.test_reliability import FAKE, JSON
from tests.worker.test_streaming import raw_celery_message
from worker.stream.redis_queue import INFLIGHT_KEY

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

PER_EXAMPLE = 20  # envelopes a hypothesis example pushes at once
EXAMPLES = 1000  # 20,000 envelopes
CHUNK = 500  # after every this many, a good request that must be answered promptly
PROMPT_S = 30.0  # the good request behind each chunk is answered within this (about 1 s on an idle 2-core machine)
ALLOWED_PREFIX = "fuzz:"  # the drill's worker takes result queues under this prefix only

ANY_TEXT = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=30)  # lone surrogates too
ID = st.one_of(
    st.uuids().map(str),
    ANY_TEXT,
    st.integers(),
    st.none(),
    st.just("x" * 500),
    st.just("a b\x00c"),
    st.booleans(),
)
REPLY_TO = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "unacked",
            "unacked_mutex",
            "unacked_index",
            "celery",
            "celery-task-meta-x",
            "_kombu.binding.celery",
            "labelq.bulk",
            "labelq:result:x",
            "node.reply.celery.pidbox",
            "fuzz:ok",
            "fuzz:hash",
            "other-tenant:q",
            "http://127.0.0.1:1/hook",
        ]
    ),
    ANY_TEXT,
)
TEMPLATE = st.one_of(st.sampled_from(["{:>100000000}", "{:d}", "{0}", "{}", "It is {}.", "{{}}", "{}{}"]), ANY_TEXT)
LABEL_OBJECTS = st.lists(
    st.fixed_dictionaries(
        {"name": st.sampled_from(["a", "b", "c"])},
        optional={"description": ANY_TEXT, "examples": st.lists(ANY_TEXT, max_size=3)},
    ),
    max_size=3,
)
REQUEST = st.fixed_dictionaries(
    {
        "text": st.one_of(st.just("refund please"), ANY_TEXT, JSON),
        "labels": st.one_of(st.just(["a", "b"]), LABEL_OBJECTS, JSON),
    },
    optional={
        "id": ID,
        "reply_to": REPLY_TO,
        "hypothesis_template": TEMPLATE,
        "metadata": st.one_of(JSON, st.just({"n": float("nan")}), st.just({"n": float("inf")})),
        "multi_label": JSON,
    },
)
TASK = st.one_of(st.just("labelq.classify"), st.just("labelq.other"), ANY_TEXT, JSON)
BODY = st.one_of(
    st.tuples(REQUEST, JSON | st.none(), JSON | st.none()).map(lambda t: [[t[0]], t[1], t[2]]),  # protocol 2
    st.tuples(REQUEST, TASK).map(lambda t: {"task": t[1], "id": str(uuid.uuid4()), "args": [t[0]], "kwargs": None}),
    REQUEST.map(lambda r: [[], {"request": r}, {}]),
    JSON,
)
HEADERS = st.one_of(
    st.fixed_dictionaries({"task": TASK, "id": ID}, optional={"lang": ANY_TEXT, "retries": JSON}),
    JSON,
    st.none(),
)
PROPERTIES = st.fixed_dictionaries(
    {},
    optional={
        "delivery_tag": st.one_of(ID, JSON),
        "body_encoding": st.one_of(st.just("base64"), st.just("utf-8"), ANY_TEXT, JSON),
        "delivery_info": JSON,
        "priority": JSON,
        "correlation_id": ID,
    },
)
CONTENT_TYPE = st.one_of(st.just("application/json"), st.just("application/x-python-serialize"), ANY_TEXT, JSON)


@st.composite
def envelopes(draw: st.DrawFn) -> bytes:
    """One message as it lands in a queue's Redis list: usually a kombu envelope, sometimes not even JSON."""
    shape = draw(st.sampled_from(["envelope"] * 8 + ["raw", "spliced"]))
    if shape == "raw":
        return draw(st.binary(max_size=200))
    body = json.dumps(draw(BODY), ensure_ascii=draw(st.booleans()), allow_nan=True)
    properties = draw(PROPERTIES)
    encoded = base64.b64encode(body.encode("utf-8", "surrogatepass")).decode()
    if properties.get("body_encoding") == "base64":
        wire_body: Any = encoded if draw(st.booleans()) else draw(st.sampled_from(["%%%", "", encoded[:-1]]))
    else:
        wire_body = draw(st.one_of(st.just(body), JSON))
    envelope = {
        "body": wire_body,
        "content-encoding": draw(st.one_of(st.just("utf-8"), ANY_TEXT)),
        "content-type": draw(CONTENT_TYPE),
        "headers": draw(HEADERS),
        "properties": properties,
    }
    raw = json.dumps(envelope, ensure_ascii=draw(st.booleans()), allow_nan=True).encode("utf-8", "surrogatepass")
    if shape == "spliced":  # bytes that are not UTF-8, anywhere
        at = draw(st.integers(min_value=0, max_value=len(raw)))
        raw = raw[:at] + draw(st.binary(min_size=1, max_size=4)) + raw[at:]
    return raw


def settle(client: Client, worker_alive: Any, timeout_s: float) -> None:
    """Until both queues are empty and nothing is unacked: every message settled."""
    deadline = time.monotonic() + timeout_s
    while client.redis.llen(QUEUE_REALTIME) or client.redis.llen(QUEUE_BULK) or client.redis.hlen(INFLIGHT_KEY):
        assert worker_alive(), "the worker died"
        assert time.monotonic() < deadline, "messages left unsettled"
        time.sleep(0.1)


def stray_keys(client: Client) -> list[str]:
    """Keys no request may have made: anything but labelq's, kombu's and the allowed result queues."""
    allowed = ("labelq:", "labelq.", "_kombu.", ALLOWED_PREFIX, "unacked", "celery-task-meta-")  # Celery's backend
    keys = [key.decode("utf-8", "backslashreplace") for key in client.redis.scan_iter(count=1000)]
    return [key for key in keys if not key.startswith(allowed)]


@pytest.mark.timeout(1200)  # about 120 s on an idle 2-core machine, 190 s with both cores busy
def test_20000_hostile_envelopes(start_worker: WorkerFactory, client: Client) -> None:
    worker = start_worker(**FAKE, reply_queue_prefixes=[ALLOWED_PREFIX])
    client.redis.hset("fuzz:hash", "a", "b")  # an allowed name that is not a list
    process = psutil.Process(worker.pid)
    rss_start = process.memory_info().rss
    pushed: list[bytes] = []
    latencies: list[float] = []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(envelopes(), min_size=PER_EXAMPLE, max_size=PER_EXAMPLE))
    def chunk(messages: list[bytes]) -> None:
        pipe = client.redis.pipeline(transaction=False)
        for raw in messages:
            pipe.lpush(QUEUE_REALTIME if len(pushed) % 2 else QUEUE_BULK, raw)
            pushed.append(raw)
        pipe.execute()
        if len(pushed) % CHUNK:
            return
        started = time.monotonic()
        good = client.submit(ClassifyRequest(text="refund please", labels=["refund", "bug"]))  # type: ignore[arg-type]
        answer = client.wait(good, timeout_s=PROMPT_S)
        assert isinstance(answer, ClassificationResult), "a good request behind hostile ones went unanswered"
        latencies.append(time.monotonic() - started)
        assert worker.poll() is None, "the worker died"

    started = time.monotonic()
    chunk()
    settle(client, lambda: worker.poll() is None, timeout_s=120)
    elapsed_s = time.monotonic() - started
    rss_end = process.memory_info().rss
    letters = [json.loads(x) for x in client.redis.lrange(DEAD_LETTER_KEY, 0, -1)]
    reasons = Counter(d["reason"] for d in letters)
    errors: Counter[str] = Counter()
    for key in client.redis.scan_iter(match=RESULT_KEY + "*", count=1000):
        raw = client.redis.get(key)
        if raw is not None and b'"status":"error"' in raw:
            errors[json.loads(raw)["code"]] += 1
    strays = stray_keys(client)
    print(
        f"\nenvelope fuzz: {len(pushed)} envelopes in {elapsed_s:.0f} s; good request behind each chunk of {CHUNK}: "
        f"max {max(latencies):.2f} s, median {sorted(latencies)[len(latencies) // 2]:.2f} s; dead letters "
        f"{dict(reasons)}; error results {dict(errors.most_common(10))}; worker RSS {rss_start / 2**20:.0f} -> "
        f"{rss_end / 2**20:.0f} MB; stray keys {strays[:5]}"
    )
    assert len(pushed) == PER_EXAMPLE * EXAMPLES
    assert worker.poll() is None
    assert not strays, strays
    assert client.redis.hgetall("fuzz:hash") == {b"a": b"b"}
    assert client.redis.type("unacked_mutex") in (b"none", b"string")  # kombu's own lock, never a list
    assert rss_end - rss_start < 200 * 2**20


def test_cost_bombs_are_refused_before_any_work(start_worker: WorkerFactory, client: Client) -> None:
    """Against the real embedded model: each bomb, then a good request answered promptly; memory bounded."""
    worker = start_worker()
    process = psutil.Process(worker.pid)
    bombs: dict[str, dict[str, Any]] = {
        "template": {"hypothesis_template": "{:>100000000}", "labels": ["a", "b"]},
        "examples": {"labels": [{"name": f"l{i}", "examples": [f"ex {i} {j}" for j in range(64)]} for i in range(100)]},
        "long-description": {"labels": [{"name": "a", "description": "d" * 1_000_000}, "b"]},
    }
    outcomes: dict[str, str] = {}
    for name, change in bombs.items():
        request = {"id": f"bomb-{name}", "text": "refund please", **change}
        started = time.monotonic()
        client.redis.lpush(QUEUE_REALTIME, _envelope(request))
        good = client.submit(ClassifyRequest(text="refund please", labels=["refund", "bug"]))  # type: ignore[arg-type]
        assert isinstance(client.wait(good, timeout_s=PROMPT_S), ClassificationResult), name
        result = client.wait(f"bomb-{name}", timeout_s=PROMPT_S)
        assert isinstance(result, ErrorResult), name
        outcomes[name] = f"{result.code.value} in {time.monotonic() - started:.2f} s"
    rss_before = process.memory_info().rss
    for i in range(300):  # distinct label texts at the description limit, for the embedding cache
        labels = [{"name": "a", "description": f"{i} " + "d" * 990}, {"name": "b", "description": f"{i} " + "e" * 990}]
        client.redis.lpush(QUEUE_BULK, _envelope({"id": f"distinct-{i}", "text": "x", "labels": labels}))
    assert isinstance(client.wait("distinct-299", timeout_s=120), ClassificationResult)
    rss_after = process.memory_info().rss
    print(
        f"\ncost bombs: {outcomes}; 300 requests of distinct 1,000-character descriptions: worker RSS "
        f"{rss_before / 2**20:.0f} -> {rss_after / 2**20:.0f} MB"
    )
    assert worker.poll() is None
    assert rss_after - rss_before < 100 * 2**20


def _envelope(request: dict[str, Any]) -> str:
    return raw_celery_message(request, QUEUE_REALTIME)
