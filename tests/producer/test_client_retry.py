"""The producer rides out a broker restart with a bounded retry (Celery's retry_policy semantics), and says so
in one line when it gives up."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import redis as redis_lib

from labelq.local_redis import RedisServer, find_redis_server, free_port
from producer import Client
from producer.client import RetryPolicy, SubmitError
from schemas.transport import QUEUE_REALTIME


@pytest.fixture
def server() -> Iterator[RedisServer]:
    binary = find_redis_server()
    assert binary is not None
    started = RedisServer(binary, persistent=True).start()
    yield started
    started.close()


def test_submitting_rides_out_a_redis_restart(server: RedisServer) -> None:
    with Client(server.url) as client:
        client.submit({"text": "warm", "labels": ["a", "b"]})  # the connection exists before Redis goes away
        server.stop()
        restarter = threading.Timer(1.5, server.start)
        restarter.start()
        started = time.monotonic()
        ids = client.submit_many([{"id": f"r{i}", "text": "x", "labels": ["a", "b"]} for i in range(10)])
        took_s = time.monotonic() - started
        restarter.join()
    print(f"\nproducer: 10 requests sent {took_s:.1f} s after Redis went away (back after 1.5 s)")
    assert ids == [f"r{i}" for i in range(10)] and took_s >= 1.0
    assert redis_lib.Redis.from_url(server.url).llen(QUEUE_REALTIME) >= 11


def test_a_producer_says_when_it_gives_up() -> None:
    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"  # nothing listens there
    policy = RetryPolicy(max_retries=2, interval_step=0.1)
    with Client(url, retry_policy=policy) as client, pytest.raises(SubmitError) as raised:
        client.submit_many([{"text": "x", "labels": ["a"]}])
    message = str(raised.value)
    assert "unreachable through 2 retries" in message and "0 of the requests were sent" in message
    assert "s3cret" not in message and raised.value.sent == []
    assert [policy.delay_s(n) for n in range(4)] == pytest.approx([0.0, 0.1, 0.2, 0.3])
