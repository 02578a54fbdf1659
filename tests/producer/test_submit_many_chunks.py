"""`Client.submit_many` sends a batch in a few round trips (one LPUSH of up to SEND_CHUNK_MESSAGES envelopes
each), the envelopes byte for byte what Celery's `send_task` sends, with the retry semantics it had sending one at
a time: a Redis restart mid-batch still sends every request (at least once), `sent` names what went, WRONGTYPE is
not retried."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib

from labelq.local_redis import RedisServer, find_redis_server
from producer import Client, SubmitError, WrongKeyType
from producer.client import SEND_CHUNK_MESSAGES, RetryPolicy
from schemas import ClassifyRequest
from schemas.transport import QUEUE_BULK, QUEUE_REALTIME, RESULT_KEY
from tests.conftest import WorkerFactory
from tests.producer.plain_app import SEEN_KEY

ROOT = Path(__file__).resolve().parents[2]
COUNT = 2 * SEND_CHUNK_MESSAGES + 200  # three chunks
FAKE = {"enable_fake_model": True, "model": "fake"}


def requests(count: int, prefix: str = "r") -> list[dict[str, Any]]:
    return [{"id": f"{prefix}{i}", "text": f"message {i}", "labels": ["a", "b", "c", "d", "e"]} for i in range(count)]


def queued_ids(client: redis_lib.Redis, queue: str) -> list[str]:
    """The task ids on `queue`, oldest first (the order a worker takes them)."""
    return [json.loads(raw)["headers"]["id"] for raw in reversed(client.lrange(queue, 0, -1))]


def commands(client: redis_lib.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(entry["calls"]) for name, entry in stats.items()}
    return {name: n for name, n in calls.items() if not name.startswith(("info", "config"))}


@pytest.fixture
def server() -> Iterator[RedisServer]:
    binary = find_redis_server()
    assert binary is not None
    started = RedisServer(binary, persistent=True).start()  # what was sent before a restart is still there
    yield started
    started.close()


def test_a_batch_goes_in_one_lpush_a_chunk_in_order(client: Client) -> None:
    client.submit({"text": "warm", "labels": ["a", "b"]}, queue="bulk")  # the connection and kombu's declaration
    client.redis.delete(QUEUE_BULK)
    client.redis.config_resetstat()

    ids = client.submit_many(requests(COUNT), queue="bulk")

    assert commands(client.redis) == {"lpush": 3}  # 500 + 500 + 200: three round trips, nothing else
    assert ids == [f"r{i}" for i in range(COUNT)] == queued_ids(client.redis, QUEUE_BULK)


def test_the_envelopes_are_byte_for_byte_what_send_task_sends(client: Client) -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    request = ClassifyRequest(id="same", text="refund please", labels=["refund", "bug"], submitted_at=when)
    with client._celery.producer_or_acquire() as producer:  # one message at a time, kombu's own LPUSH
        client._send(request, QUEUE_REALTIME, producer)
    client.submit_many([request], queue="realtime")

    chunked, one_by_one = client.redis.lrange(QUEUE_REALTIME, 0, -1)
    tag = re.compile(rb'"delivery_tag": "[0-9a-f-]{36}"')  # kombu's uuid4 a message: the only difference
    assert tag.search(chunked) and tag.search(one_by_one)
    assert tag.sub(b"TAG", chunked) == tag.sub(b"TAG", one_by_one)


def test_a_labelq_worker_answers_every_request_of_a_chunked_batch(start_worker: WorkerFactory, client: Client) -> None:
    start_worker(**FAKE)
    sent = client.submit_many(requests(SEND_CHUNK_MESSAGES + 20, "b"), queue="bulk")
    sent += client.submit_many(requests(30, "t"), queue="realtime")
    deadline = time.monotonic() + 60
    while missing := [i for i in sent if not client.redis.exists(RESULT_KEY + i)]:
        assert time.monotonic() < deadline, f"{len(missing)} unanswered"
        time.sleep(0.1)
    answer = client.get("b7")
    assert answer is not None and answer.status == "ok" and answer.id == "b7"


def test_a_plain_celery_worker_runs_them_with_the_request_as_its_argument(
    redis_url: str, client: Client, tmp_path: Path
) -> None:
    log = tmp_path / "plain.log"
    command = [sys.executable, "-m", "celery", "-A", "tests.producer.plain_app", "worker", "-P", "solo"]
    command += ["-Q", QUEUE_REALTIME, "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "INFO"]
    sent = client.submit_many(requests(5, "p"), queue="realtime")
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, env={**os.environ, "PLAIN_BROKER": redis_url}, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        while client.redis.llen(SEEN_KEY) < len(sent):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGKILL)
        process.wait()
    seen = [json.loads(raw) for raw in client.redis.lrange(SEEN_KEY, 0, -1)]
    assert [task_id for task_id, _ in seen] == sent
    assert [(args["id"], args["text"], args["labels"]) for _, args in seen] == [
        (r["id"], r["text"], r["labels"]) for r in requests(5, "p")
    ]


def test_a_redis_restart_mid_batch_still_sends_every_request(server: RedisServer) -> None:
    restarted = threading.Event()

    def batch() -> Iterator[dict[str, Any]]:
        for i, request in enumerate(requests(COUNT)):
            if i == SEND_CHUNK_MESSAGES + 100:  # the first chunk went; Redis goes away while the second is built
                server.stop()
                threading.Timer(1.5, lambda: (server.start(), restarted.set())).start()
            yield request

    with Client(server.url) as client:
        ids = client.submit_many(batch(), queue="bulk")
        assert restarted.wait(10)
        on_queue = queued_ids(client.redis, QUEUE_BULK)
    assert ids == [f"r{i}" for i in range(COUNT)]
    assert set(on_queue) == set(ids) and len(on_queue) >= COUNT  # at least once each; duplicates by id at worst
    assert on_queue[:SEND_CHUNK_MESSAGES] == ids[:SEND_CHUNK_MESSAGES]  # the first chunk, sent once, in order


def test_giving_up_mid_batch_names_the_chunks_that_went(server: RedisServer) -> None:
    def batch() -> Iterator[dict[str, Any]]:
        for i, request in enumerate(requests(COUNT)):
            if i == SEND_CHUNK_MESSAGES + 100:
                server.stop()  # and it stays away
            yield request

    policy = RetryPolicy(max_retries=2, interval_step=0.1)
    with Client(server.url, retry_policy=policy) as client, pytest.raises(SubmitError) as raised:
        client.submit_many(batch(), queue="bulk")
    assert raised.value.sent == [f"r{i}" for i in range(SEND_CHUNK_MESSAGES)]
    assert f"{SEND_CHUNK_MESSAGES} of the requests were sent" in str(raised.value)


def test_a_queue_key_turned_to_another_type_mid_batch_is_not_retried(client: Client) -> None:
    def batch() -> Iterator[dict[str, Any]]:
        for i, request in enumerate(requests(COUNT)):
            if i == SEND_CHUNK_MESSAGES + 100:
                client.redis.delete(QUEUE_BULK)
                client.redis.set(QUEUE_BULK, "not a list")
            yield request

    started = time.monotonic()
    with pytest.raises(WrongKeyType) as raised:
        client.submit_many(batch(), queue="bulk")
    assert time.monotonic() - started < 5  # refused at once, not retried through the policy (about 17 s)
    assert raised.value.key == QUEUE_BULK and raised.value.kind == "string"
    assert raised.value.sent == [f"r{i}" for i in range(SEND_CHUNK_MESSAGES)]


def test_a_request_that_does_not_validate_is_raised_after_the_ones_before_it_are_sent(client: Client) -> None:
    batch = [*requests(3), {"text": "", "labels": ["a"]}, *requests(2, "after")]
    with pytest.raises(ValueError, match="text"):
        client.submit_many(batch, queue="bulk")
    assert queued_ids(client.redis, QUEUE_BULK) == ["r0", "r1", "r2"]


def test_a_priority_list_of_another_type_is_found_whatever_the_process_declared_before(
    redis_url: str, client: Client
) -> None:
    """kombu declares a queue (looking at its lists) once per process and Redis URL: a second client in the same
    process skipped it, sent onto the plain list, and a stream at a priority sub-list went unnoticed."""
    client.submit({"text": "warm", "labels": ["a", "b"]}, queue="bulk")  # this process has declared labelq.bulk
    client.redis.xadd(f"{QUEUE_BULK}\x06\x169", {"not": "a list"})
    with Client(redis_url) as other, pytest.raises(WrongKeyType) as raised:
        other.submit_many(requests(3), queue="bulk")
    assert (raised.value.key, raised.value.kind, raised.value.sent) == (f"{QUEUE_BULK}\x06\x169", "stream", [])
    assert client.redis.llen(QUEUE_BULK) == 1  # only the warm-up


def submit_file(client: Client, source: Path) -> subprocess.CompletedProcess[str]:
    """`labelq submit-file SOURCE --queue bulk` against the client's Redis."""
    url = client.redis.connection_pool.connection_kwargs
    return subprocess.run(
        [sys.executable, "-m", "labelq.cli", "submit-file", str(source), "--queue", "bulk"],
        env={**os.environ, "LABELQ_REDIS_URL": f"redis://{url['host']}:{url['port']}/{url.get('db', 0)}"},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def test_submit_file_sends_a_round_trip_a_chunk_and_names_the_bad_lines(client: Client, tmp_path: Path) -> None:
    """`labelq submit-file` sent one request a round trip (about 30 us of Redis CPU each); it sends chunks as
    `submit_many` does, in the file's order, and still reports every invalid line by number."""
    lines = [json.dumps(request) for request in requests(COUNT)]
    lines.insert(7, '{"text": "no labels"}')
    source = tmp_path / "requests.jsonl"
    source.write_text("\n".join(lines) + "\n")
    client.redis.config_resetstat()
    done = submit_file(client, source)
    assert done.returncode == 1 and "line 8: " in done.stderr, done.stderr  # the invalid line, by number
    assert f"{COUNT} submitted to bulk, 1 rejected" in done.stdout
    assert commands(client.redis).get("lpush") == 3
    assert queued_ids(client.redis, QUEUE_BULK) == [f"r{i}" for i in range(COUNT)]


def test_submit_file_onto_a_key_of_another_type_stops_naming_the_line(client: Client, tmp_path: Path) -> None:
    source = tmp_path / "requests.jsonl"
    source.write_text("\n".join(json.dumps(request) for request in requests(3)) + "\n")
    client.redis.xadd(QUEUE_BULK, {"not": "a list"})
    done = submit_file(client, source)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "is a stream, not a list" in done.stderr and "(line 1; 0 sent before it)" in done.stderr
