"""Redis holding what labelq does not expect: an item that is no dead letter, a `labelq:worker:*` key that is no
worker record, a queue's key of another type. Each is named in one line; listings show the rest and exit 1 (a
partial listing); a key of the wrong type is exit 2 everywhere, never retried, and no worker starts on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import redis as redis_py

from producer import Client, WrongKeyType
from producer.client import RetryPolicy
from schemas.transport import DEAD_LETTER_KEY, WORKER_KEY, WORKER_KEY_TTL_S
from worker.deadletters import DeadLetter


def labelq(*args: str, redis_url: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "LABELQ_REDIS_URL": redis_url, **env}
    environment.pop("LABELQ_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "labelq.cli", *args], env=environment, capture_output=True, text=True, timeout=120
    )


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.fixture
def r(redis_url: str) -> Iterator[redis_py.Redis]:
    client = redis_py.Redis.from_url(redis_url)
    yield client
    client.close()


def announce(r: redis_py.Redis, node: str, model: str, queues: list[str]) -> None:
    """A worker's record, as a ready worker writes it (schemas/transport.py WORKER_KEY)."""
    record = {"model": model, "revision": "r1", "queues": queues, "pid": 4242}
    r.set(WORKER_KEY + node, json.dumps(record), ex=WORKER_KEY_TTL_S)


# --- dead letters -------------------------------------------------------------------------------------------


def letter(reason: str) -> str:
    return DeadLetter(reason, "labelq.bulk", b'{"not": "a request"}', message_id="m-" + reason).to_json(time.time())


def test_dlq_list_names_an_item_that_is_no_dead_letter_shows_the_rest_and_exits_1(
    redis_url: str, r: redis_py.Redis
) -> None:
    first, last = letter("undecodable"), letter("invalid_request")
    r.rpush(DEAD_LETTER_KEY, first, b"\xffnot UTF-8", b"not json", b'{"id": 3}', last)
    done = labelq("dlq", "list", redis_url=redis_url)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    skipped = done.stderr.strip().splitlines()
    assert len(skipped) == 3 and all(DEAD_LETTER_KEY in line for line in skipped), done.stderr
    assert "item 1 " in skipped[0] and "not UTF-8" in skipped[0], done.stderr
    assert "item 2 " in skipped[1] and "not JSON" in skipped[1], done.stderr
    assert "item 3 " in skipped[2] and "no id or reason" in skipped[2], done.stderr
    assert done.stdout.startswith("2 dead letters")
    for text in (first, last):
        assert json.loads(text)["id"] in done.stdout
    assert r.llen(DEAD_LETTER_KEY) == 5  # nothing taken away

    shown = labelq("dlq", "show", json.loads(last)["id"], redis_url=redis_url)
    assert shown.returncode == 0 and json.loads(shown.stdout)["reason"] == "invalid_request", shown.stderr

    replayed = labelq("dlq", "replay", "--all", "--reason", "undecodable", redis_url=redis_url)
    assert replayed.returncode == 1 and "item 1 " in replayed.stderr, replayed.stderr  # named there too
    assert "Traceback" not in replayed.stderr


def test_a_dead_letter_list_of_another_type_is_named_and_exit_2(redis_url: str, r: redis_py.Redis) -> None:
    r.hset(DEAD_LETTER_KEY, "a", "b")
    for args in (["list"], ["show", "x"], ["replay", "--all"], ["purge", "--yes", "--reason", "undecodable"]):
        done = labelq("dlq", *args, redis_url=redis_url)
        assert done.returncode == 2, (args, done.stderr)
        line = one_line_error(done)
        assert f"key '{DEAD_LETTER_KEY}' is a hash, not a list" in line and "password" not in line


# --- worker records -----------------------------------------------------------------------------------------


def test_workers_names_a_record_it_cannot_read_shows_the_rest_and_exits_1(redis_url: str, r: redis_py.Redis) -> None:
    announce(r, "good@host", "fake", ["labelq.realtime"])
    r.set(WORKER_KEY + "junk@host", b"\x00garbage")
    r.set(WORKER_KEY + "partial@host", json.dumps({"model": "fake"}))
    r.rpush(WORKER_KEY + "list@host", b"x")
    done = labelq("workers", redis_url=redis_url)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout.startswith("good@host  fake@r1") and len(done.stdout.splitlines()) == 1
    skipped = sorted(done.stderr.strip().splitlines())
    assert len(skipped) == 3, done.stderr
    assert f"{WORKER_KEY}junk@host: not JSON" in skipped[0]
    assert f"{WORKER_KEY}list@host: a Redis list" in skipped[1]
    assert f"{WORKER_KEY}partial@host: no revision, queues, pid" in skipped[2]

    with Client(redis_url) as client:  # the library lists the readable ones, and says which are not
        assert set(client.workers()) == {"good@host"}
        assert set(client.read_workers()[1]) == {WORKER_KEY + n for n in ("junk@host", "partial@host", "list@host")}

    healthy = labelq("health", redis_url=redis_url)
    assert healthy.returncode == 1 and "junk@host" in healthy.stderr, healthy.stdout + healthy.stderr
    assert healthy.stdout.strip().endswith("unhealthy")


def test_workers_and_health_with_readable_records_only_exit_0(redis_url: str, r: redis_py.Redis) -> None:
    announce(r, "a@host", "fake", ["labelq.realtime", "labelq.bulk"])
    announce(r, "b@host", "fake", ["labelq.bulk"])
    assert labelq("workers", redis_url=redis_url).returncode == 0
    done = labelq("health", "--json", redis_url=redis_url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["status"] == "healthy"


def test_health_is_unhealthy_when_one_queue_is_served_by_workers_of_different_models(
    redis_url: str, r: redis_py.Redis
) -> None:
    announce(r, "a@host", "minilm-l6-int8", ["labelq.realtime", "labelq.bulk"])
    announce(r, "b@host", "fake", ["labelq.bulk"])
    done = labelq("health", redis_url=redis_url)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.strip() == (
        "unhealthy: queue labelq.bulk is served by workers with different models: a@host (model minilm-l6-int8), "
        "b@host (model fake); run one model per queue"
    )
    report = json.loads(labelq("health", "--json", redis_url=redis_url).stdout)
    assert report["status"] == "unhealthy" and len(report["problems"]) == 1  # realtime has one model: fine


# --- keys of the wrong type ---------------------------------------------------------------------------------


def test_a_stream_where_a_queue_belongs_is_named_by_health_and_submit_exit_2(redis_url: str, r: redis_py.Redis) -> None:
    r.xadd("labelq.realtime", {"not": "a list"})
    done = labelq("health", redis_url=redis_url)
    assert done.returncode == 2, done.stdout + done.stderr
    line = one_line_error(done)
    assert "key 'labelq.realtime' is a stream, not a list" in line and "password" not in line
    assert json.loads(labelq("health", "--json", redis_url=redis_url).stdout)["wrong_keys"] == [
        "key 'labelq.realtime' is a stream, not a list"
    ]

    submitted = labelq("submit", "hello", "--labels", "a,b", redis_url=redis_url)
    assert submitted.returncode == 2, submitted.stdout + submitted.stderr
    line = one_line_error(submitted)
    assert "key 'labelq.realtime' is a stream, not a list" in line and "unreachable" not in line
    assert labelq("submit", "hello", "--labels", "a,b", "--queue", "bulk", redis_url=redis_url).returncode == 0


def test_a_ledger_key_of_another_type_is_named_too(redis_url: str, r: redis_py.Redis) -> None:
    """Found by an outside check: a string at labelq:inflight was 'a Redis key holds another type' with no key."""
    r.set("labelq:inflight", "x")
    line = one_line_error(labelq("health", redis_url=redis_url))
    assert "key 'labelq:inflight' is a string, not a hash" in line


def test_the_client_raises_wrong_key_type_at_once_never_retrying(redis_url: str, r: redis_py.Redis) -> None:
    r.xadd("labelq.bulk\x06\x169", {"not": "a list"})  # kombu's sub-list for priority 9
    r.set("labelq.tasks", "x")
    patient = RetryPolicy(max_retries=3, interval_start=30.0)  # a retry would take 30 s
    with Client(redis_url, retry_policy=patient) as client:
        started = time.monotonic()
        with pytest.raises(WrongKeyType) as raised:
            client.submit_many([{"text": "hello", "labels": ["a"]}], queue="bulk")
        assert (raised.value.key, raised.value.kind, raised.value.sent) == ("labelq.bulk\x06\x169", "stream", [])
        with pytest.raises(WrongKeyType) as corrected:
            client.correct("r1", ["a"], "hello", timeout_s=1)
        assert (corrected.value.key, corrected.value.kind) == ("labelq.tasks", "string")
        assert time.monotonic() - started < 25, "it retried"


def test_a_worker_refuses_to_start_on_a_queue_of_another_type(redis_url: str, r: redis_py.Redis) -> None:
    r.xadd("labelq.bulk", {"not": "a list"})
    done = labelq("worker", redis_url=redis_url, LABELQ_MODEL="fake", LABELQ_ENABLE_FAKE_MODEL="1")
    assert done.returncode == 2, done.stdout + done.stderr
    line = one_line_error(done)
    assert "key 'labelq.bulk' is a stream, not a list" in line
    assert r.type("labelq.bulk") == b"stream" and not list(r.scan_iter(match=WORKER_KEY + "*"))


# --- exit codes ---------------------------------------------------------------------------------------------


def test_submit_wait_with_no_worker_is_the_commands_no_exit_1(redis_url: str) -> None:
    done = labelq("submit", "hello", "--labels", "a,b", "--wait", "--timeout", "0.5", redis_url=redis_url)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "no result" in one_line_error(done)
