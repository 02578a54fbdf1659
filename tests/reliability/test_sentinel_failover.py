"""Redis Sentinel: a real master, a replica and three sentinels on loopback; a worker and a producer reach them by
kombu's `sentinel://` URL; the master is killed mid-stream and the sentinels promote the replica. Reports sent /
answered / lost / duplicates (docs/reliability.md says what replication can and cannot promise)."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_lib

from labelq.local_redis import RedisServer, find_redis_server, free_port
from labelq.processes import stop_process
from producer import Client
from schemas import ClassifyRequest, parse_result
from tests.conftest import WorkerFactory
from tests.reliability.test_reliability import FAKE

pytestmark = [pytest.mark.reliability, pytest.mark.slow]
MASTER = "mymaster"
REQUESTS = 3000
CHUNK = 100  # the producer sends this many at a time, a little apart, so sending spans the failover
KILL_AFTER = 800  # results before the master is killed


class Cluster:
    """A master, a replica of it, and three sentinels (quorum 2, the master down after 1 s)."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.master = RedisServer(binary, extra=["--repl-diskless-sync-delay", "0"]).start()
        self.replica = RedisServer(binary, extra=["--replicaof", "127.0.0.1", str(self.master.port)]).start()
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.sentinels: list[subprocess.Popen[bytes]] = []
        for port in self.sentinel_ports:
            config = directory / f"sentinel-{port}.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
                f"sentinel monitor {MASTER} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {MASTER} 1000\n"
                f"sentinel failover-timeout {MASTER} 5000\n"
            )
            self.sentinels.append(
                subprocess.Popen(
                    [binary, str(config), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
            )
        try:
            self._wait_until_ready()
        except BaseException:
            self.close()  # a cluster that never came up leaves no process behind
            raise

    @property
    def url(self) -> str:
        return ";".join(f"sentinel://127.0.0.1:{port}/0" for port in self.sentinel_ports)

    def master_port(self) -> int:
        reply = redis_lib.Redis(port=self.sentinel_ports[0]).sentinel_get_master_addr_by_name(MASTER)
        return int(reply[1])

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                replication = redis_lib.Redis(port=self.replica.port).info("replication")
                replicated = replication.get("master_link_status") == "up"
                sentinels = [redis_lib.Redis(port=port) for port in self.sentinel_ports]
                known = all(
                    s.sentinel_master(MASTER)["num-other-sentinels"] == 2
                    and s.sentinel_master(MASTER)["num-slaves"] == 1
                    for s in sentinels
                )
                if replicated and known:
                    return
            except redis_lib.RedisError:
                pass
            assert time.monotonic() < deadline, "the sentinels did not see each other and the replica"
            time.sleep(0.1)

    def close(self) -> None:
        for process in self.sentinels:
            stop_process(process, timeout_s=5)
        self.master.close()
        self.replica.close()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    binary = find_redis_server()
    assert binary is not None
    built = Cluster(binary, tmp_path)
    yield built
    built.close()


def test_a_sentinel_failover_mid_stream(start_worker: WorkerFactory, cluster: Cluster) -> None:
    options = {"master_name": MASTER}
    worker = start_worker(
        url=cluster.url,
        redis_transport_options=options,
        **FAKE,
    )
    client = Client(cluster.url, transport_options=options)
    batch = [
        ClassifyRequest(id=f"f{i}", text=f"refund {i}", labels=["refund", "bug"], reply_to="results:failover")  # type: ignore[arg-type]
        for i in range(REQUESTS)
    ]
    sent: list[str] = []

    def produce() -> None:
        with Client(cluster.url, transport_options=options) as producer:
            for start in range(0, REQUESTS, CHUNK):
                sent.extend(producer.submit_many(batch[start : start + CHUNK], queue="bulk"))
                time.sleep(0.05)

    sender = threading.Thread(target=produce)
    sender.start()
    seen: Counter[str] = Counter()
    old_master = cluster.master_port()
    killed_at = promoted_at = 0.0
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and (sender.is_alive() or not set(sent) <= set(seen)):
        try:
            for raw in client.redis.lpop("results:failover", 500) or []:
                seen[str(parse_result(raw).id)] += 1
            if not killed_at and sum(seen.values()) >= KILL_AFTER:
                assert cluster.master.process is not None
                cluster.master.process.send_signal(signal.SIGKILL)  # the master dies mid-stream
                killed_at = time.monotonic()
            if killed_at and not promoted_at and cluster.master_port() != old_master:
                promoted_at = time.monotonic()
        except redis_lib.RedisError:  # the master is gone and not yet replaced: ask again
            pass
        assert worker.poll() is None, "the worker died"
        time.sleep(0.05)
    sender.join(timeout=60)
    lost = [request_id for request_id in sent if request_id not in seen]
    duplicates = sum(n - 1 for n in seen.values())
    print(
        f"\nsentinel failover: {len(sent)} sent, {len(seen)} answered, {len(lost)} lost, {duplicates} duplicates; "
        f"master killed after {KILL_AFTER} results, replica promoted {promoted_at - killed_at:.1f} s later"
    )
    assert killed_at and promoted_at, "no failover happened"
    assert len(sent) == REQUESTS, "the producer gave up during the failover"
    assert worker.poll() is None
    assert sent[-1] in seen  # the stream goes on after the failover
    client.close()
