"""Hostile messages against real worker processes: no single message may stop, block or redirect a worker, and a
worker process that dies anyway says so (a non-zero exit) and is replaced."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from producer import Client
from schemas import ClassificationResult, ClassifyRequest, ErrorCode, ErrorResult
from schemas.transport import QUEUE_REALTIME
from tests.conftest import WorkerFactory
from tests.worker.test_streaming import raw_celery_message

FAKE = {"enable_fake_model": True, "model": "fake"}
GOOD = {"text": "refund please", "labels": ["refund", "bug"]}


def hostile_envelopes() -> dict[str, bytes]:
    """Whole kombu envelopes, by what is wrong with them; each names a request id equal to its key."""
    out: dict[str, bytes] = {}
    raw = raw_celery_message({**GOOD, "id": "tag-not-utf8"}, QUEUE_REALTIME).encode()
    marker = b'"delivery_tag": "'
    start = raw.index(marker) + len(marker)
    out["tag-not-utf8"] = raw[:start] + b"\xff\xfe" + raw[start:]
    lone = json.loads(raw_celery_message({**GOOD, "id": "lone-surrogate-id"}, QUEUE_REALTIME))
    lone["headers"]["id"] = "\ud800"
    out["lone-surrogate-id"] = json.dumps(lone).encode()
    for name in ("unacked", "unacked_mutex", "celery"):
        out[f"reply-{name}"] = raw_celery_message(
            {**GOOD, "id": f"reply-{name}", "reply_to": name}, QUEUE_REALTIME
        ).encode()
    out["reply-hash"] = raw_celery_message({**GOOD, "id": "reply-hash", "reply_to": "a:hash"}, QUEUE_REALTIME).encode()
    return out


def test_hostile_envelopes_neither_stop_nor_hold_back_the_worker(start_worker: WorkerFactory, client: Client) -> None:
    worker = start_worker(**FAKE)
    client.redis.hset("a:hash", "field", "value")
    envelopes = hostile_envelopes()
    started = time.monotonic()
    for envelope in envelopes.values():
        client.redis.lpush(QUEUE_REALTIME, envelope)
    good = client.submit(ClassifyRequest(**GOOD), queue="realtime")  # type: ignore[arg-type]
    answer = client.wait(good, timeout_s=10)
    assert isinstance(answer, ClassificationResult), "a good request behind hostile ones is answered promptly"
    answered_s = time.monotonic() - started
    outcomes = {rid: client.wait(rid, timeout_s=10) for rid in envelopes}
    print(
        f"\nhostile envelopes: the good request behind them answered in {answered_s:.2f} s; "
        + ", ".join(
            f"{rid}: {o.code.value if isinstance(o, ErrorResult) else o.status if o else 'nothing'}"
            for rid, o in outcomes.items()
        )
    )
    assert worker.poll() is None
    assert isinstance(outcomes["tag-not-utf8"], ClassificationResult)
    refused = outcomes["lone-surrogate-id"]  # dead-lettered; its request's own id hears why
    assert isinstance(refused, ErrorResult) and refused.code == ErrorCode.INVALID_MESSAGE
    for rid in ("reply-unacked", "reply-unacked_mutex", "reply-celery", "reply-hash"):
        outcome = outcomes[rid]
        assert isinstance(outcome, ErrorResult) and outcome.code == ErrorCode.INVALID_REPLY_TO, rid
    assert client.redis.type("unacked_mutex") == b"none" and client.redis.type("celery") == b"none"
    assert client.redis.hgetall("a:hash") == {b"field": b"value"}
    deadline = time.monotonic() + 5  # the batch is acked just after its results are written
    while client.redis.hlen("unacked"):  # every hostile message settled, none left to come back
        assert time.monotonic() < deadline, "messages left unacked"
        time.sleep(0.05)


def test_a_worker_that_stops_on_an_error_exits_non_zero(start_worker: WorkerFactory) -> None:
    worker = start_worker(wait=False, model="no-such-model")
    assert worker.wait(timeout=60) != 0


def test_a_dead_worker_process_is_replaced(start_worker: WorkerFactory, client: Client, tmp_path: Path) -> None:
    parent = start_worker(worker_processes=2, **FAKE)
    deadline = time.monotonic() + 60
    while len(client.workers()) < 2:
        assert time.monotonic() < deadline and parent.poll() is None
        time.sleep(0.1)
    name, info = sorted(client.workers().items())[0]
    os.kill(info["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 60
    while client.workers().get(name, {}).get("pid") == info["pid"]:
        assert time.monotonic() < deadline, "no replacement"
        assert parent.poll() is None, "the parent gave up"
        time.sleep(0.1)
    print(f"\n{name}: pid {info['pid']} killed, replaced by pid {client.workers()[name]['pid']}")
    request = client.submit(ClassifyRequest(**GOOD), queue="realtime")  # type: ignore[arg-type]
    assert isinstance(client.wait(request, timeout_s=30), ClassificationResult)
    assert "starting a replacement" in (tmp_path / "worker-0.log").read_text()
