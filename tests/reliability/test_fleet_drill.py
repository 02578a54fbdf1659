"""A fleet over two Redis servers (LABELQ_REDIS_SHARDS): one `labelq worker` serving both (a process for each), a
stream of requests from `Client.submit_many`, one server SIGKILLed mid-stream and started again on its port with
its append-only file. The other server's worker keeps answering while it is down; every request is answered, by id
on its home server only (exactly one result key across the fleet), nothing lost. Also `labelq health` and `labelq
workers` while the server is down: a partial answer, exit 1, naming it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_lib

from labelq.local_redis import RedisServer, find_redis_server
from producer import Client
from schemas import ClassifyRequest, parse_result
from schemas.servers import home_server, server_name
from schemas.transport import RESULT_KEY

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
REQUESTS = 4000
ROUND = 400  # sent every ROUND_PAUSE_S by the producer's thread
ROUND_PAUSE_S = 0.2
REPLY = "results:fleet"
FAKE = {
    "LABELQ_ENABLE_FAKE_MODEL": "true",
    "LABELQ_MODEL": "fake",
    "LABELQ_FAKE_MODEL_RUN_MS": "40",  # a backlog builds, so the server left up has work while the other is down
    "LABELQ_VISIBILITY_TIMEOUT_S": "6",
    "LABELQ_UNACKED_RESTORE_INTERVAL_S": "1",
    "LABELQ_BULK_BATCH_SIZE": "32",
    "LABELQ_BULK_MAX_PAIRS": "100",
    "LABELQ_REALTIME_MAX_PAIRS": "100",
    "LABELQ_INTRA_OP_THREADS": "1",
}


@pytest.fixture
def servers() -> Iterator[list[RedisServer]]:
    binary = find_redis_server()
    assert binary is not None
    started = [RedisServer(binary, persistent=True).start() for _ in range(2)]
    yield started
    for server in started:
        server.close()


def fleet_env(servers: list[RedisServer]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("LABELQ_")}
    return env | FAKE | {"PYTHONPATH": str(ROOT), "LABELQ_REDIS_SHARDS": ",".join(s.url for s in servers)}


def labelq(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "labelq.cli", *args], env=env, capture_output=True, text=True, timeout=60
    )


def answered(server: RedisServer) -> int:
    with redis_lib.Redis.from_url(server.url) as raw:
        return int(raw.llen(REPLY))


def test_one_server_killed_mid_stream_stops_only_its_share(servers: list[RedisServer], tmp_path: Path) -> None:
    env = fleet_env(servers)
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "labelq.cli", "worker", "--hostname", "drill@%h"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its group: the parent and a process for each server
        )
    try:
        _drill(servers, env, worker, log)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()


def _drill(servers: list[RedisServer], env: dict[str, str], worker: subprocess.Popen[bytes], log: Path) -> None:
    urls = [server.url for server in servers]
    deadline = time.monotonic() + 60
    while labelq(env, "workers").returncode != 0:  # one ready worker on each server
        assert worker.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.3)
    listing = labelq(env, "workers").stdout
    assert all(server_name(url) in listing for url in urls), listing

    batch = [
        ClassifyRequest(id=f"fleet-{i}", text=f"refund for order {i}", labels=["refund", "bug"], reply_to=REPLY)  # type: ignore[arg-type]
        for i in range(REQUESTS)
    ]
    sent: list[str] = []
    failed: list[BaseException] = []

    def produce() -> None:
        try:
            with Client(urls) as client:
                for start in range(0, REQUESTS, ROUND):
                    sent.extend(client.submit_many(batch[start : start + ROUND], queue="bulk"))
                    time.sleep(ROUND_PAUSE_S)
        except BaseException as exc:  # raised in the test below
            failed.append(exc)

    producer = threading.Thread(target=produce)
    started = time.monotonic()
    producer.start()
    victim, survivor = servers[1], servers[0]
    while answered(victim) < 300:  # mid-stream: results flowing on both
        assert time.monotonic() - started < 60 and not failed, failed
        time.sleep(0.05)
    assert victim.process is not None
    victim.process.kill()  # SIGKILL: no shutdown, the AOF (fsync always) is what it keeps
    victim.process.wait()
    killed = time.monotonic()
    sent_at_kill = len(sent)
    before = answered(survivor)
    health = labelq(env, "health")
    workers = labelq(env, "workers")
    time.sleep(max(0.0, 2.0 - (time.monotonic() - killed)))
    during = answered(survivor) - before
    victim.start()  # back on its port, with its append-only file
    restarted = time.monotonic()
    producer.join(timeout=120)
    assert not producer.is_alive() and not failed, failed

    assert health.returncode == 1 and "partial: 1 of 2 Redis servers unreachable" in health.stdout, health
    assert server_name(victim.url) in health.stdout
    assert workers.returncode == 1 and f"Redis at {server_name(victim.url)} unreachable" in workers.stderr, workers
    assert server_name(survivor.url) in workers.stdout  # the survivor's worker still listed

    # every request answered, by id on its home server only; reply queues read on each server
    ids = {request.id for request in batch}
    seen: Counter[str] = Counter()
    wrong_server: list[str] = []
    deadline = time.monotonic() + 180
    raws = [redis_lib.Redis.from_url(url) for url in urls]
    try:
        while not ids <= set(seen) and time.monotonic() < deadline:
            took = False
            for index, raw in enumerate(raws):
                for item in raw.lpop(REPLY, 500) or []:  # type: ignore[union-attr]
                    took = True
                    request_id = str(parse_result(item).id)
                    seen[request_id] += 1
                    if home_server(request_id, 2) != index:
                        wrong_server.append(request_id)
            if not took:
                time.sleep(0.1)
        keys = [
            sum(int(raw.exists(RESULT_KEY + request_id)) for raw in raws) for request_id in sorted(ids)
        ]  # one result key per id across the fleet
        homes_hold = all(raws[home_server(i, 2)].exists(RESULT_KEY + i) for i in ids)
    finally:
        for raw in raws:
            raw.close()
    missing = ids - set(seen)
    duplicates = sum(n - 1 for n in seen.values())
    print(
        f"\nfleet drill: {len(sent)} sent to 2 servers ({sent_at_kill} at the kill); "
        f"server {server_name(victim.url)} SIGKILLed after "
        f"300+ of its results, restarted {restarted - killed:.1f} s later; the other "
        f"answered {during} while it was down; all answered {time.monotonic() - restarted:.1f} s after the restart; "
        f"{duplicates} duplicates on the reply queues (same id, allowed: docs/reliability.md); {len(missing)} lost"
    )
    assert sent_at_kill < REQUESTS  # the kill came mid-stream
    assert sorted(sent) == sorted(ids)  # every request sent once: the producer rode out the restart
    assert during > 0  # the other server's worker kept answering
    assert not missing and not wrong_server
    assert set(keys) == {1} and homes_hold  # answered exactly once by id: one result key, on the home server
