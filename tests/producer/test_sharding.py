"""A fleet over several Redis servers: each request's home server is a stable hash of its id, the ids spread evenly,
and `Client.get` / `wait` / `results` find a result where it was written; `submit_many` sends a server's share a
chunk a round trip; a server down is retried, then named in `SubmitError`, and the others' shares still go."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import redis as redis_lib

from labelq.local_redis import RedisServer, find_redis_server
from producer import Client, SubmitError
from producer.client import SEND_CHUNK_MESSAGES, RetryPolicy
from schemas import ClassificationResult
from schemas.servers import home_server, jump_hash, repeated_server, server_name
from schemas.transport import NOTIFY_KEY, QUEUE_BULK, RESULT_KEY, RedisURLError


def test_the_home_server_is_a_stable_hash_of_the_id() -> None:
    # golden values: the rule is part of the contract (schemas/servers.py), a producer in another language computes
    # jump_hash(sha256(id)[:8] big-endian, N); changing it would send every producer's requests somewhere else
    assert [home_server(i, 3) for i in ("a", "b", "req-1", "chat-8812", "")] == [1, 0, 0, 2, 2]
    assert all(home_server(f"id-{i}", 1) == 0 for i in range(100))
    with pytest.raises(ValueError):
        home_server("a", 0)


def test_jump_hash_is_the_papers() -> None:
    # the test vectors of a reference implementation (github.com/dgryski/go-jump)
    vectors = [(1, 1, 0), (42, 57, 43), (0xDEAD10CC, 1, 0), (0xDEAD10CC, 666, 361), (256, 1024, 520)]
    assert [jump_hash(key, buckets) for key, buckets, _ in vectors] == [want for _, _, want in vectors]


@pytest.mark.parametrize("servers", [1, 2, 3, 7])
def test_adding_a_server_moves_few_ids_and_only_to_it(servers: int) -> None:
    ids = [f"request-{i}" for i in range(20_000)]
    moved = [i for i in ids if home_server(i, servers) != home_server(i, servers + 1)]
    assert all(home_server(i, servers + 1) == servers for i in moved)  # to the new server, never between old ones
    assert abs(len(moved) / len(ids) - 1 / (servers + 1)) < 0.02


@pytest.mark.parametrize("servers", [2, 3, 5])
def test_ids_spread_evenly(servers: int) -> None:
    counts = Counter(home_server(f"request-{i}", servers) for i in range(30_000))
    assert set(counts) == set(range(servers))
    expected = 30_000 / servers
    assert all(abs(n - expected) < 0.05 * expected for n in counts.values()), counts


def test_server_names_never_show_a_password() -> None:
    assert server_name("redis://:s3cret@10.0.0.1:6380/2") == "10.0.0.1:6380/2"
    assert server_name("redis://user:s3cret@cache") == "cache:6379/0"
    assert server_name("rediss://:pw@[::1]:6380/0?ssl_cert_reqs=required") == "[::1]:6380/0"
    assert server_name("sentinel://:pw@s1:26379/1;sentinel://s2:26380/1") == "sentinel s1:26379,s2:26380/1"


def test_a_server_named_twice_is_refused_whatever_its_password() -> None:
    assert repeated_server(["redis://a:1/0", "redis://b:1/0"]) is None
    assert repeated_server(["redis://a:1/0", "redis://b:1/0", "redis://:pw@a:1/0"]) == (
        "item 3 names the same server as item 1 (a:1/0); name each server once"
    )
    with pytest.raises(RedisURLError, match="item 2 names the same server"):
        Client(["redis://127.0.0.1:1/0", "redis://127.0.0.1:1"])


@pytest.fixture
def two() -> Iterator[list[RedisServer]]:
    binary = find_redis_server()
    assert binary is not None
    servers = [RedisServer(binary, persistent=True).start() for _ in range(2)]
    yield servers
    for server in servers:
        server.close()


def requests(count: int, prefix: str = "s") -> list[dict[str, Any]]:
    return [{"id": f"{prefix}{i}", "text": f"message {i}", "labels": ["a", "b"]} for i in range(count)]


def queued(server: RedisServer, queue: str = QUEUE_BULK) -> list[str]:
    with redis_lib.Redis.from_url(server.url) as raw:
        return [json.loads(item)["headers"]["id"] for item in reversed(raw.lrange(queue, 0, -1))]


def lpush_calls(server: RedisServer) -> int:
    with redis_lib.Redis.from_url(server.url) as raw:
        return int(raw.info("commandstats").get("cmdstat_lpush", {}).get("calls", 0))


def test_submit_many_sends_each_request_to_its_home_in_chunks(two: list[RedisServer]) -> None:
    batch = requests(3 * SEND_CHUNK_MESSAGES)
    with Client([server.url for server in two]) as client:
        assert client.sharded and client.names == tuple(server_name(server.url) for server in two)
        sent = client.submit_many(batch, queue="bulk")
    assert sent == [item["id"] for item in batch]  # every id, in the order given
    for index, server in enumerate(two):
        mine = [item["id"] for item in batch if home_server(item["id"], 2) == index]
        assert queued(server) == mine  # on its home only, in order
        assert lpush_calls(server) <= len(mine) // SEND_CHUNK_MESSAGES + 3  # a chunk a round trip, not one a message


def result_json(request_id: str) -> str:
    return json.dumps(
        {
            "status": "ok",
            "id": request_id,
            "top": "a",
            "accepted": ["a"],
            "labels": [{"label": "a", "score": 0.9, "threshold": 0.5, "accepted": True}],
            "multi_label": False,
            "model": "fake",
            "model_revision": "x",
            "timings": {"inference_ms": 1.0, "batch_ms": 1.0},
        }
    )


def test_get_and_wait_find_a_result_on_its_home_then_on_the_others(two: list[RedisServer]) -> None:
    with Client([server.url for server in two]) as client:
        home = client.home("q1")
        other = 1 - home
        assert client.get("q1") is None
        client.servers[other].redis.set(RESULT_KEY + "q1", result_json("q1"))  # written before a reshard
        found = client.get("q1")
        assert isinstance(found, ClassificationResult) and found.id == "q1"
        # wait: a result written on its home while waiting, woken by the notification
        homed = next(f"w{i}" for i in range(100) if client.home(f"w{i}") == home)
        started = time.monotonic()
        assert client.wait(homed, timeout_s=0.2) is None
        home_redis = client.servers[home].redis
        home_redis.set(RESULT_KEY + homed, result_json(homed))
        home_redis.lpush(NOTIFY_KEY + homed, 1)
        waited = client.wait(homed, timeout_s=5)
        assert waited is not None and waited.id == homed and time.monotonic() - started < 3


def test_results_reads_the_queue_on_every_server(two: list[RedisServer]) -> None:
    with Client([server.url for server in two]) as client:
        for index, server in enumerate(client.servers):
            server.redis.rpush("results:fleet", *(result_json(f"{index}-{i}") for i in range(3)))
        got = [result.id for result in client.results("results:fleet")]
        assert sorted(got) == sorted(f"{index}-{i}" for index in range(2) for i in range(3))
        assert [g for g in got if g.startswith("1-")] == ["1-0", "1-1", "1-2"]  # in order per server
        assert all(not server.redis.exists("results:fleet") for server in client.servers)


def test_a_server_down_is_named_and_the_others_share_still_goes(two: list[RedisServer]) -> None:
    two[1].stop()
    quick = RetryPolicy(max_retries=2, interval_step=0.05)
    batch = requests(200, "d")
    with Client([server.url for server in two], retry_policy=quick) as client:
        with pytest.raises(SubmitError) as raised:
            client.submit_many(batch, queue="bulk")
        message = str(raised.value)
        assert server_name(two[1].url) in message and "unreachable through 2 retries" in message
        assert message.count("unreachable through") == 1, message  # one sentence, not one nested in another
        up = [item["id"] for item in batch if home_server(item["id"], 2) == 0]
        assert raised.value.sent == up and queued(two[0]) == up
        # get of a request homed on the server that is down: its error, not "no result"
        down_id = next(item["id"] for item in batch if home_server(item["id"], 2) == 1)
        with pytest.raises(redis_lib.ConnectionError):
            client.get(down_id)
        assert client.get(up[0]) is None  # its home answers
        two[1].start()  # back: the same client sends to it again
        assert client.submit_many(batch, queue="bulk") == [item["id"] for item in batch]


def test_the_other_servers_share_keeps_going_while_one_is_down(two: list[RedisServer]) -> None:
    """A server down holds only its own share: the other server gets all of its requests at once, the held ones
    go when their server is back (within the retry policy), every id once, in the order given."""
    two[1].stop()
    patient = RetryPolicy(max_retries=40, interval_step=0.1, interval_max=0.25)  # about 10 s
    batch = requests(5 * SEND_CHUNK_MESSAGES, "k")
    up = [item["id"] for item in batch if home_server(item["id"], 2) == 0]
    seen_while_down: list[int] = []

    def restart_later() -> None:
        deadline = time.monotonic() + 10
        while len(queued(two[0])) < len(up) and time.monotonic() < deadline:
            time.sleep(0.02)
        seen_while_down.append(len(queued(two[0])))
        two[1].start()

    restarter = threading.Thread(target=restart_later)
    with Client([server.url for server in two], retry_policy=patient) as client:
        restarter.start()
        sent = client.submit_many(batch, queue="bulk")
        restarter.join()
    assert seen_while_down == [len(up)]  # all of the up server's share went while the other was down
    assert sent == [item["id"] for item in batch]  # every id once, in the order given
    assert queued(two[0]) == up and queued(two[1]) == [i for i in sent if home_server(i, 2) == 1]
