"""A fleet's processes and metrics: each child the launcher starts for a server is an ordinary worker of that one
server (its LABELQ_REDIS_URL, no LABELQ_REDIS_SHARDS), and the parent's collector reports each server by name
(up or not, its queue depths, what is in flight), never with its password."""

from __future__ import annotations

import json

import pytest
import redis as redis_lib

from labelq.local_redis import free_port
from schemas.servers import server_name
from schemas.transport import INFLIGHT_KEY, QUEUE_BULK, QUEUE_REALTIME
from worker.process.launcher import child_environment
from worker.process.servers import ServersCollector
from worker.settings import load_settings


def test_a_child_serves_its_one_server(monkeypatch: pytest.MonkeyPatch) -> None:
    urls = ["redis://a:6379/0", "redis://:pw@b:6380/1"]
    monkeypatch.setenv("LABELQ_REDIS_SHARDS", json.dumps(urls))
    settings = load_settings()
    env = child_environment(4, None, settings, server=urls[1])
    assert env["LABELQ_REDIS_URL"] == urls[1] and env["LABELQ_REDIS_SHARDS"] == ""
    for name, value in env.items():
        if name.startswith("LABELQ_"):
            monkeypatch.setenv(name, value)
    child = load_settings()
    assert child.redis_urls() == (urls[1],) and child.redis_url == urls[1]


def test_the_collector_reports_each_server_by_name(redis_url: str) -> None:
    down = f"redis://:secret@127.0.0.1:{free_port()}/0"
    with redis_lib.Redis.from_url(redis_url) as up:
        up.rpush(QUEUE_BULK, "a", "b", "c")
        up.rpush(QUEUE_REALTIME + "\x06\x163", "x")  # a priority sub-list counts too
        up.hset(INFLIGHT_KEY, "1.1", "held")
        clients = {
            server_name(url): redis_lib.Redis.from_url(url, socket_connect_timeout=1) for url in (redis_url, down)
        }
        try:
            families = {family.name: family for family in ServersCollector(clients).collect()}
        finally:
            for client in clients.values():
                client.close()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in families.values()
        for sample in family.samples
    }
    ok, gone = server_name(redis_url), server_name(down)
    assert samples[("labelq_redis_up", (("redis", ok),))] == 1
    assert samples[("labelq_redis_up", (("redis", gone),))] == 0
    assert samples[("labelq_redis_queue_depth", (("queue", QUEUE_BULK), ("redis", ok)))] == 3
    assert samples[("labelq_redis_queue_depth", (("queue", QUEUE_REALTIME), ("redis", ok)))] == 1
    assert samples[("labelq_redis_in_flight", (("redis", ok),))] == 1
    assert "secret" not in repr(samples)
