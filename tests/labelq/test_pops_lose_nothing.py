"""Reading results takes each off its queue only once it was read: a closed pipe (`| head`), SIGINT or SIGTERM at
any instant leaves every result either printed or still on the queue, in order (docs/producing.md)."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import redis as redis_py

from producer import Client
from producer.client import READER_KEY, READERS_KEY, READING_KEY
from schemas import ErrorResult, parse_result
from schemas.codes import ErrorCode

QUEUE = "results:lossless"
LABELQ = [sys.executable, "-m", "labelq.cli"]


def push(r: redis_py.Redis, count: int, queue: str = QUEUE) -> list[str]:
    ids = [f"r{i:04d}" for i in range(count)]
    items = [ErrorResult(id=i, code=ErrorCode.EMPTY_TEXT, message="text is empty").model_dump_json() for i in ids]
    r.rpush(queue, *items)
    return ids


def left(r: redis_py.Redis, queue: str = QUEUE) -> list[str]:
    """The ids still on the queue, in order (nothing may be stranded on a holding list)."""
    assert not list(r.scan_iter(match=READING_KEY + "*")), "an item was left on a reader's holding list"
    return [parse_result(raw).id or "" for raw in r.lrange(queue, 0, -1)]


def ids_of(output: bytes) -> list[str]:
    return [parse_result(line).id or "" for line in output.splitlines() if line.strip()]


@pytest.fixture
def r(redis_url: str) -> Iterator[redis_py.Redis]:
    client = redis_py.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.mark.parametrize("lines", [1, 3])
def test_results_into_head_leaves_what_head_did_not_print_and_exits_0(
    redis_url: str, r: redis_py.Redis, lines: int
) -> None:
    ids = push(r, 300)
    env = {**os.environ, "LABELQ_REDIS_URL": redis_url}
    reader = subprocess.Popen([*LABELQ, "results", QUEUE], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    head = subprocess.Popen(["head", f"-{lines}"], stdin=reader.stdout, stdout=subprocess.PIPE)
    assert reader.stdout is not None and reader.stderr is not None
    reader.stdout.close()  # head holds the only reading end
    printed, _ = head.communicate(timeout=60)
    with reader.stderr:
        stderr = reader.stderr.read()
    assert reader.wait(timeout=60) == 0, stderr
    assert stderr == b""
    assert ids_of(printed) == ids[:lines]
    assert left(r) == ids[lines:]  # nothing lost, nothing taken twice, order kept


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_at_any_instant_loses_nothing(redis_url: str, r: redis_py.Redis, signum: int) -> None:
    """The signal lands after a random number of lines and a random pause: inside a Redis command, while a
    result is held, while it waits for the pipe to be read, or while waiting for more (--follow)."""
    env = {**os.environ, "LABELQ_REDIS_URL": redis_url}
    rng = random.Random(signum)
    for attempt in range(4):
        r.delete(QUEUE)
        ids = push(r, 60)
        reader = subprocess.Popen(
            [*LABELQ, "results", QUEUE, "--follow"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert reader.stdout is not None
        printed = [reader.stdout.readline()]  # it runs: its handlers are in place
        for _ in range(rng.randrange(0, 70)):  # past the end too: then it waits for more
            if len(printed) == len(ids):
                break
            printed.append(reader.stdout.readline())
        time.sleep(rng.random() * 0.01)
        reader.send_signal(signum)
        rest, stderr = reader.communicate(timeout=60)  # what it wrote and no one read yet counts as printed
        assert reader.returncode == 128 + signum, (attempt, stderr)
        assert b"Traceback" not in stderr and b"error" not in stderr, stderr
        seen = ids_of(b"".join(printed) + rest)
        remaining = left(r)
        assert set(seen) | set(remaining) == set(ids), attempt  # each printed or still there
        assert remaining == sorted(remaining)  # in order
        assert not r.exists(READERS_KEY + QUEUE)  # the reader left no trace


def test_leaving_the_loop_early_puts_the_held_result_back(client: Client, r: redis_py.Redis) -> None:
    ids = push(r, 5)
    with contextlib.closing(client.results(QUEUE)) as taken:
        assert [next(taken).id, next(taken).id] == ids[:2]  # the first is done with: the second is held
    assert left(r) == ids[1:]
    with pytest.raises(RuntimeError), contextlib.closing(client.results(QUEUE)) as taken:
        for _ in taken:
            raise RuntimeError("the caller failed with it")
    assert left(r) == ids[1:]
    assert [result.id for result in client.results(QUEUE)] == ids[1:]
    assert left(r) == []


def test_a_killed_readers_result_goes_back_once_its_lease_lapsed(
    client: Client, redis_url: str, r: redis_py.Redis
) -> None:
    """SIGKILL leaves no chance to put back: the next reader of the queue does it, once the lease has lapsed."""
    ids = push(r, 3)
    killed = client.results(QUEUE)
    assert next(killed).id == ids[0]  # held, as when its reader is killed now (never closed)
    (token,) = (member.decode() for member in r.smembers(READERS_KEY + QUEUE))  # type: ignore[union-attr]
    with Client(redis_url) as other:
        assert [result.id for result in other.results(QUEUE)] == ids[1:]  # alive: what it holds stays held
        r.delete(READER_KEY + token)  # its lease lapses
        assert [result.id for result in other.results(QUEUE)] == ids[:1]
    assert left(r) == []
