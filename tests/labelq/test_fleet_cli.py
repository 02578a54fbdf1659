"""The CLI over several Redis servers (LABELQ_REDIS_SHARDS): `submit` sends to the id's home server, `get` and `wait`
find a result there, `health` and `workers` cover every server, with the exit codes of the README's table: 1 for a
partial answer (a server down, or one without a ready worker), 3 only when no server answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_lib

from labelq.health import FleetHealth, Health, models_across_servers
from labelq.local_redis import RedisServer, find_redis_server
from schemas.servers import home_server, server_name
from schemas.transport import QUEUE_REALTIME, RESULT_KEY
from tests.producer.test_sharding import result_json

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def two() -> Iterator[list[RedisServer]]:
    binary = find_redis_server()
    assert binary is not None
    servers = [RedisServer(binary).start() for _ in range(2)]
    yield servers
    for server in servers:
        server.close()


def labelq(servers: list[RedisServer], *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("LABELQ_")}
    env |= {"PYTHONPATH": str(ROOT), "LABELQ_REDIS_SHARDS": json.dumps([server.url for server in servers])}
    return subprocess.run(
        [sys.executable, "-m", "labelq.cli", *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_submit_get_wait_health_and_workers_over_two_servers(two: list[RedisServer]) -> None:
    sent = labelq(two, "submit", "refund my order", "--labels", "refund,bug")
    assert sent.returncode == 0, sent.stderr
    request_id = sent.stdout.strip()
    home = two[home_server(request_id, 2)]
    with redis_lib.Redis.from_url(home.url) as raw:
        assert raw.llen(QUEUE_REALTIME) == 1  # on its home server only
        waiting = labelq(two, "wait", request_id, "--timeout", "0.3")
        assert waiting.returncode == 1 and "no result within 0.3 s" in waiting.stderr
        raw.set(RESULT_KEY + request_id, result_json(request_id))  # as its worker would write it
    for command in ("get", "wait"):
        found = labelq(two, command, request_id)
        assert found.returncode == 0 and json.loads(found.stdout)["id"] == request_id, found.stderr
    assert labelq(two, "get", "never-sent").returncode == 1

    health = labelq(two, "health")
    assert health.returncode == 1 and all(f"server {server_name(s.url)}" in health.stdout for s in two)
    assert "no ready worker" in health.stderr
    listed = labelq(two, "workers")  # a reachable server without a worker is named too (it exited 0, silent)
    assert listed.returncode == 1
    assert all(f"no ready worker on Redis at {server_name(s.url)}" in listed.stderr for s in two), listed.stderr

    two[1].stop()
    health = labelq(two, "health", "--json")
    report = json.loads(health.stdout)
    assert health.returncode == 1 and report["status"].startswith("partial: 1 of 2 Redis servers unreachable")
    assert report["servers"][server_name(two[1].url)]["redis"].startswith("ConnectionError")
    workers = labelq(two, "workers")
    assert workers.returncode == 1 and f"Redis at {server_name(two[1].url)} unreachable" in workers.stderr

    two[0].stop()
    assert labelq(two, "health").returncode == 3  # no server answers: Redis unreachable
    assert labelq(two, "workers").returncode == 3
    gone = labelq(two, "get", request_id)  # the hint names the variable the servers came from
    assert gone.returncode == 3 and "correct LABELQ_REDIS_SHARDS" in gone.stderr, gone.stderr


def test_different_models_on_different_servers_is_unhealthy() -> None:
    def worker(model: str) -> dict[str, object]:
        return {"model": model, "revision": "r", "pid": 1, "queues": ["labelq.realtime", "labelq.bulk"]}

    same = {
        "a:1/0": Health("ok", workers={"w1": worker("fake")}),
        "b:1/0": Health("ok", workers={"w2": worker("fake")}),
    }
    assert models_across_servers(same) == []
    other = {**same, "b:1/0": Health("ok", workers={"w2": worker("minilm")})}
    lines = models_across_servers(other)
    assert len(lines) == 2 and "a:1/0 (model fake), b:1/0 (model minilm)" in lines[0]
    fleet = FleetHealth(servers=other, problems=lines)
    assert fleet.status == 1 and fleet.verdict == "unhealthy"
    mixed_on_one = {
        "a:1/0": Health("ok", workers={"w1": worker("fake"), "w3": worker("minilm")}),
        "b:1/0": same["b:1/0"],
    }
    assert models_across_servers(mixed_on_one) == []  # that server's own problem, reported in its block


def test_a_plain_celery_worker_given_several_servers_serves_each_of_them(
    two: list[RedisServer], tmp_path: Path
) -> None:
    """`celery -A worker.celery_app worker` with LABELQ_REDIS_SHARDS served only the first server, silently: a
    request whose home is the second waited forever. It supervises one child per server now, as `labelq worker`."""
    import signal
    import time

    from producer import Client
    from schemas import ClassifyRequest

    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("LABELQ_")}
    env |= {
        "PYTHONPATH": str(ROOT),
        "LABELQ_REDIS_SHARDS": json.dumps([server.url for server in two]),
        "LABELQ_ENABLE_FAKE_MODEL": "true",
        "LABELQ_MODEL": "fake",
    }
    log = tmp_path / "celery.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "-n", "plain@test"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        with Client([server.url for server in two]) as client:
            requests = [
                ClassifyRequest(id=f"plain-{i}", text="refund please", labels=["refund", "bug"]) for i in range(40)
            ]
            assert {home_server(r.id, 2) for r in requests} == {0, 1}  # some on each server
            ids = client.submit_many(requests)
            answered = {}
            deadline = time.monotonic() + 90
            while len(answered) < len(ids) and time.monotonic() < deadline and worker.poll() is None:
                for request_id in ids:
                    if request_id not in answered and (result := client.get(request_id)) is not None:
                        answered[request_id] = result
                time.sleep(0.2)
            assert len(answered) == len(ids), log.read_text()[-3000:]
        for server in two:  # each server has its own child (its record may follow its first answers)
            with redis_lib.Redis.from_url(server.url) as raw:
                deadline = time.monotonic() + 30
                while not raw.keys("labelq:worker:*") and time.monotonic() < deadline:
                    time.sleep(0.2)
                assert raw.keys("labelq:worker:*"), f"no worker of {server_name(server.url)}"
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(60)
    assert worker.returncode == 0, log.read_text()[-3000:]


def test_label_sets_are_written_to_every_server_and_a_missed_one_is_named(
    two: list[RedisServer], tmp_path: Path
) -> None:
    """A request is served by its id's home server, so a label set must be on each: `labelsets put` stored it on
    LABELQ_REDIS_URL's server only (with only LABELQ_REDIS_SHARDS set, on 127.0.0.1:6379, outside the fleet), and
    requests whose home was another got unknown_label_set. Now every write goes to each server; one that cannot be
    reached is named, exit 1, and `list` says where versions differ."""
    from worker.stream.labelsets import LabelSetStore

    source = tmp_path / "intents.yaml"
    source.write_text("labels:\n  - refund\n  - bug\n")
    put = labelq(two, "labelsets", "put", "intents", str(source))
    assert put.returncode == 0 and "intents version 1: 2 labels" in put.stdout, put.stderr
    for server in two:
        with redis_lib.Redis.from_url(server.url) as raw:
            stored = LabelSetStore(raw).get("intents")
            assert (
                stored is not None
                and stored.version == 1
                and [label.name for label in stored.labels] == ["refund", "bug"]
            )
    listed = labelq(two, "labelsets", "list")
    assert listed.returncode == 0 and "intents  v1  2 labels" in listed.stdout and "differs" not in listed.stdout

    two[1].stop()
    again = labelq(two, "labelsets", "put", "intents", str(source))
    assert again.returncode == 1 and "intents version 2" in again.stdout
    assert f"Redis at {server_name(two[1].url)} unreachable: not written there" in again.stderr
    assert "Traceback" not in again.stderr
    two[1].start()
    listed = labelq(two, "labelsets", "list")
    assert listed.returncode == 1 and "differs between servers" in listed.stdout, listed.stdout
    caught_up = labelq(two, "labelsets", "put", "intents", str(source))  # again, once it is back
    assert caught_up.returncode == 0 and "intents version 3" in caught_up.stdout, caught_up.stderr
    listed = labelq(two, "labelsets", "list")
    assert listed.returncode == 0 and "intents  v3  2 labels" in listed.stdout  # one number on every server
    with redis_lib.Redis.from_url(two[0].url) as raw:  # the first server lost it (came back empty, say)
        LabelSetStore(raw).delete("intents")
    listed = labelq(two, "labelsets", "list")  # was silent: the set was read from the first server only
    assert listed.returncode == 1 and "intents  v3  2 labels" in listed.stdout, listed.stdout
    assert f"v none on {server_name(two[0].url)}" in listed.stdout
    deleted = labelq(two, "labelsets", "delete", "intents")
    assert deleted.returncode == 0
    for server in two:
        with redis_lib.Redis.from_url(server.url) as raw:
            assert LabelSetStore(raw).get("intents") is None


def test_a_single_server_command_in_a_fleet_never_uses_a_redis_outside_it(two: list[RedisServer]) -> None:
    """With only LABELQ_REDIS_SHARDS set, `labelq dlq list` read 127.0.0.1:6379 (the option's own default: a Redis
    outside the fleet, perhaps someone else's) and exited 0. It reads the fleet's first server now."""
    from worker.deadletters import DeadLetter

    with redis_lib.Redis.from_url(two[0].url) as raw:
        raw.rpush("labelq:dead", DeadLetter("undecodable", "labelq.bulk", b"x").to_json(1.0))
    listed = labelq(two, "dlq", "list")
    assert listed.returncode == 0 and "1 dead letter" in listed.stdout, listed.stdout + listed.stderr
    # which server it read is said (an outside check read "0 dead letters" while the other server held one)
    assert f"note: on {server_name(two[0].url)}, one of the 2 servers of LABELQ_REDIS_SHARDS" in listed.stderr


def test_feedback_goes_to_the_home_server_of_the_request_it_corrects(two: list[RedisServer]) -> None:
    """`labelq feedback` sent every correction to one server: a request homed on another was `unknown_request`."""
    request_id = next(f"fb-{i}" for i in range(100) if home_server(f"fb-{i}", 2) == 1)  # homed on the second
    sent = labelq(two, "feedback", request_id, "--labels", "bug", "--text", "it crashes", "--timeout", "0.5")
    assert sent.returncode == 1 and "Traceback" not in sent.stderr  # no worker here to answer it
    depths = []
    for server in two:
        with redis_lib.Redis.from_url(server.url) as raw:
            depths.append(raw.llen("labelq.tasks"))
    assert depths == [0, 1], depths


def test_a_refit_reads_the_corrections_of_every_server(two: list[RedisServer]) -> None:
    """A correction is kept on its request's home server: a refit on the first server alone saw 1/N of them."""
    from labelq.commands.labelset_fleet import fleet_of
    from schemas import RequestLimits
    from worker.constants import CORRECTIONS_KEY

    for number, server in enumerate(two):
        with redis_lib.Redis.from_url(server.url) as raw:
            for i in range(3):
                item = {"request_id": f"s{number}-{i}", "text": f"text {number} {i}", "labels": ["bug"]}
                raw.rpush(CORRECTIONS_KEY + "intents", json.dumps(item))
    fleet = fleet_of([server.url for server in two], RequestLimits(), redis_lib.Redis.from_url)
    read = fleet.corrections(100).read("intents")
    assert sorted(c.request_id for c in read) == [f"s{n}-{i}" for n in range(2) for i in range(3)]
    two[1].stop()
    assert len(fleet.corrections(100).read("intents")) == 3 and fleet.missed == [server_name(two[1].url)]
