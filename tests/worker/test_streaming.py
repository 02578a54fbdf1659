"""End to end through a real Redis and real `labelq worker` processes (embedded MiniLM model)."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
import redis as redis_lib

from producer import Client
from schemas import ClassificationResult, ClassifyRequest, ErrorCode, ErrorResult, parse_result
from schemas.transport import DEAD_LETTER_KEY, QUEUE_BULK, QUEUE_REALTIME
from tests.conftest import WorkerFactory
from worker.stream.redis_queue import INFLIGHT_KEY

ROUTING = ["billing", "technical problem", "account access", "delivery", "praise"]
TEXTS = [
    "I was charged twice for my subscription",
    "The app crashes every time I open the settings page",
    "I forgot my password and can't log in",
    "My parcel has not arrived",
    "Your support team is fantastic",
]


def requests(n: int, reply_to: str, prefix: str = "req") -> list[ClassifyRequest]:
    return [
        ClassifyRequest(
            id=f"{prefix}-{i}",
            text=f"{TEXTS[i % len(TEXTS)]} (ticket {i})",
            labels=ROUTING,  # type: ignore[arg-type]
            reply_to=reply_to,
            multi_label=i % 3 == 0,
        )
        for i in range(n)
    ]


def drain(client: Client, queue: str, expected_ids: set[str], timeout_s: float) -> list[Any]:
    """Take results off a result queue until every expected id was seen (or time runs out)."""
    got: list[Any] = []
    seen: set[str] = set()
    deadline = time.monotonic() + timeout_s
    while not expected_ids <= seen and time.monotonic() < deadline:
        popped = client.redis.blpop([queue], timeout=0.5)
        if popped:
            result = parse_result(popped[1])
            got.append(result)
            seen.add(str(result.id))
    return got


@dataclass(frozen=True)
class Tally:
    """Results against the requests sent: how many answered, answered more than once, never answered."""

    answered: int
    duplicates: int
    missing: frozenset[str]

    @classmethod
    def of(cls, sent: list[ClassifyRequest], got: list[Any]) -> Tally:
        counts = Counter(str(r.id) for r in got)
        return cls(len(counts), sum(n - 1 for n in counts.values()), frozenset({r.id for r in sent} - set(counts)))


def wait_for_length(client: Client, key: str, at_least: int, timeout_s: float = 60) -> None:
    """Until the Redis list `key` holds `at_least` items (a stream is under way); fails after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while client.redis.llen(key) < at_least:
        assert time.monotonic() < deadline, f"{key} stayed below {at_least} items for {timeout_s} s"
        time.sleep(0.005)


def raw_celery_message(request: dict[str, Any], queue: str, task_id: str | None = None) -> str:
    """A Celery protocol-2 task message exactly as kombu's Redis transport stores it: what a Node.js or Go
    Celery client LPUSHes onto the queue's list."""
    task_id = task_id or str(uuid.uuid4())
    body = json.dumps([[request], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}])
    return json.dumps(
        {
            "body": base64.b64encode(body.encode()).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {
                "lang": "js",
                "task": "labelq.classify",
                "id": task_id,
                "root_id": task_id,
                "parent_id": None,
                "group": None,
                "retries": 0,
                "eta": None,
                "expires": None,
            },
            "properties": {
                "correlation_id": task_id,
                "reply_to": "",
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": queue},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
    )


def test_a_thousand_requests_each_get_one_result(start_worker: WorkerFactory, client: Client) -> None:
    start_worker()
    batch = requests(1000, "results:e2e")
    started = time.monotonic()
    client.submit_many(batch[:500], queue="bulk")
    client.submit_many(batch[500:], queue="realtime")
    got = drain(client, "results:e2e", {r.id for r in batch}, timeout_s=120)
    elapsed = time.monotonic() - started
    tally = Tally.of(batch, got)
    print(
        f"\n1000 requests: {len(got)} results in {elapsed:.1f} s, {len(tally.missing)} missing, "
        f"{tally.duplicates} duplicates"
    )
    assert not tally.missing
    assert all(isinstance(r, ClassificationResult) for r in got)
    for result in got:  # a result answers its own request
        index = int(result.id.split("-")[1])
        assert result.multi_label == (index % 3 == 0)
    single = [r for r in got if not r.multi_label]
    by_text = Counter((int(r.id.split("-")[1]) % 5, r.top) for r in single)
    assert by_text.most_common(1)[0][1] > 0 and {top for (_, top) in by_text} >= {"billing", "praise"}


def test_a_hand_built_celery_message_pushed_with_a_raw_redis_command(
    start_worker: WorkerFactory, client: Client
) -> None:
    start_worker()
    request = {
        "id": "raw-1",
        "text": "I was charged twice for my subscription",
        "labels": ROUTING,
        "reply_to": "results:raw",
    }
    raw = raw_celery_message(request, QUEUE_REALTIME)
    client.redis.execute_command("LPUSH", QUEUE_REALTIME, raw)  # what any Celery client does
    result = client.wait("raw-1", timeout_s=30)
    assert isinstance(result, ClassificationResult) and result.top == "billing"
    assert parse_result(client.redis.lpop("results:raw")).id == "raw-1"  # type: ignore[arg-type]


def test_poison_messages_are_answered_or_dead_lettered(start_worker: WorkerFactory, client: Client) -> None:
    start_worker()
    valid = requests(180, "results:poison", prefix="ok")
    poison_invalid = [
        {
            "id": f"bad-{i}",
            "text": "" if i % 2 else "x",
            "labels": [] if i % 2 else ["a", "a"],
            "reply_to": "results:poison",
        }
        for i in range(10)
    ]
    poison_bytes = [
        b"\xff\xfe\x00garbage",
        b"{not json",
        b"[1, 2, 3]",
        b'{"task": "other"}',
        b'"just a string"',
        b"",
        b"{}" * 1000,
        b"[" * 5000,
        b'{"body": 1}',
        b"\x00" * 64,
    ]
    client.submit_many(valid[:90], queue="realtime")
    for i, item in enumerate(poison_invalid):
        client.redis.lpush(QUEUE_REALTIME, raw_celery_message(item, QUEUE_REALTIME, task_id=f"poison-{i}"))
    for blob in poison_bytes:  # valid kombu envelopes whose task body is garbage
        envelope = json.loads(raw_celery_message({}, QUEUE_REALTIME))
        envelope["body"] = base64.b64encode(blob).decode()
        client.redis.lpush(QUEUE_REALTIME, json.dumps(envelope))
    client.submit_many(valid[90:], queue="realtime")
    expected = {r.id for r in valid} | {p["id"] for p in poison_invalid}
    got = drain(client, "results:poison", expected, timeout_s=60)
    by_id = {r.id: r for r in got}
    assert expected <= set(by_id)
    assert all(isinstance(by_id[r.id], ClassificationResult) for r in valid)
    for item in poison_invalid:
        result = by_id[item["id"]]
        assert isinstance(result, ErrorResult)
        assert result.code in (ErrorCode.EMPTY_TEXT, ErrorCode.DUPLICATE_LABELS)
    wait_for_length(client, DEAD_LETTER_KEY, 20, timeout_s=10)
    letters = [json.loads(x) for x in client.redis.lrange(DEAD_LETTER_KEY, 0, -1)]
    reasons = Counter(letter["reason"] for letter in letters)
    print(f"\npoison: {len(valid)} valid classified, dead letters by reason: {dict(reasons)}")
    assert reasons == {"invalid_request": 10, "undecodable": 10}
    assert all(letter["raw"] is not None and letter["detail"] for letter in letters)


def kill_while_holding(victim: subprocess.Popen[bytes], client: Client, timeout_s: float = 60) -> int:
    """SIGKILL the worker at an instant it holds claimed messages; returns how many it held. Between two
    claims it holds none, so it is stopped first and only killed once the ledger shows what it holds."""
    deadline = time.monotonic() + timeout_s
    while True:
        victim.send_signal(signal.SIGSTOP)
        held = client.redis.hlen(INFLIGHT_KEY)
        if held or time.monotonic() > deadline:
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            return int(held)
        victim.send_signal(signal.SIGCONT)
        time.sleep(0.005)


@pytest.mark.slow
@pytest.mark.reliability
def test_sigkill_mid_batch_loses_nothing(start_worker: WorkerFactory, client: Client) -> None:
    settings = {
        "visibility_timeout_s": 6,
        "unacked_restore_interval_s": 1,
        "bulk_batch_size": 32,
        "bulk_max_pairs": 100,
        "realtime_max_pairs": 50,
    }
    victim = start_worker(**settings)
    batch = requests(2000, "results:kill")
    client.submit_many(batch, queue="bulk")
    wait_for_length(client, "results:kill", 60)  # the worker is mid-stream
    in_flight = kill_while_holding(victim, client)
    killed_at = time.monotonic()
    start_worker(**settings)
    got = drain(client, "results:kill", {r.id for r in batch}, timeout_s=90)
    recovered_s = time.monotonic() - killed_at
    tally = Tally.of(batch, got)
    print(
        f"\nSIGKILL: {in_flight} messages unacked at the kill; all {tally.answered} answered {recovered_s:.1f} s "
        f"after it; {tally.duplicates} duplicates; {len(tally.missing)} missing"
    )
    assert in_flight > 0, "the kill did not catch a batch in flight"
    assert not tally.missing, f"in flight now: {client.redis.hlen(INFLIGHT_KEY)}"
    bound_s = settings["visibility_timeout_s"] + settings["unacked_restore_interval_s"] + 10  # + sweep lock expiry
    assert recovered_s < bound_s + 15  # + the time to classify what is left


@pytest.mark.slow
@pytest.mark.reliability
def test_sigterm_leaves_nothing_in_flight_and_loses_nothing(start_worker: WorkerFactory, client: Client) -> None:
    worker = start_worker(bulk_batch_size=32)
    batch = requests(300, "results:term")
    client.submit_many(batch, queue="bulk")
    wait_for_length(client, "results:term", 40)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    assert client.redis.hlen(INFLIGHT_KEY) == 0  # nothing left half-done: answered or handed back
    start_worker()
    got = drain(client, "results:term", {r.id for r in batch}, timeout_s=60)
    tally = Tally.of(batch, got)
    print(
        f"\nSIGTERM: worker exited 0 with nothing unacked; {tally.answered} of 300 answered; "
        f"{tally.duplicates} duplicates; {len(tally.missing)} missing"
    )
    assert not tally.missing


def test_queues_are_separate_latency_classes(start_worker: WorkerFactory, client: Client) -> None:
    """A realtime request is answered while a bulk backlog is still being worked through."""
    start_worker(bulk_batch_size=64)
    client.submit_many(requests(1500, "results:backlog", prefix="bulk"), queue="bulk")
    wait_for_length(client, "results:backlog", 64)
    urgent = client.submit(ClassifyRequest(text="I was charged twice", labels=ROUTING), queue="realtime")  # type: ignore[arg-type]
    result = client.wait(urgent, timeout_s=30)
    backlog_left = 1500 - client.redis.llen("results:backlog")
    assert isinstance(result, ClassificationResult)
    assert backlog_left > 0, "the backlog finished before the realtime request: the test proves nothing"


@pytest.mark.parametrize("shards", [None, "redis://127.0.0.1:1/0,redis://127.0.0.1:2/0"])
def test_demo_runs_end_to_end_and_leaves_nothing_behind(redis_url: str, shards: str | None) -> None:
    """With LABELQ_REDIS_SHARDS in the shell (a fleet's), the demo's worker refused its private Redis ("not in
    LABELQ_REDIS_SHARDS"): the demo runs on one Redis and leaves the fleet aside."""
    env = {**os.environ, "LABELQ_REDIS_URL": redis_url} | ({"LABELQ_REDIS_SHARDS": shards} if shards else {})
    done = subprocess.run(
        [sys.executable, "-m", "labelq.cli", "demo", "--count", "8"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("route: ") == 4 and done.stdout.count("flags: ") == 4
    assert "route: billing" in done.stdout
    workers = redis_lib.Redis.from_url(redis_url).keys("labelq:worker:*")
    assert workers == []  # the demo's worker shut down and retired
    assert QUEUE_BULK  # (the demo uses the realtime queue only)


def test_producer_cli_submit_wait_file_and_results(start_worker: WorkerFactory, redis_url: str, tmp_path: Any) -> None:
    start_worker()
    env = {**os.environ, "LABELQ_REDIS_URL": redis_url}

    def labelq(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "labelq.cli", *args], env=env, capture_output=True, text=True, timeout=60
        )

    waited = labelq("submit", "I was charged twice", "--labels", "billing,bug,praise", "--wait")
    assert waited.returncode == 0, waited.stderr
    assert parse_result(waited.stdout).top == "billing"  # type: ignore[union-attr]
    refused = labelq("submit", "text", "--labels", "a,a")
    assert refused.returncode == 1 and refused.stdout == ""  # refused before sending: one line on stderr
    assert refused.stderr.startswith("error duplicate_labels (labels):") and refused.stderr.count("\n") == 1
    source = tmp_path / "in.jsonl"
    source.write_text(
        json.dumps({"id": "f1", "text": "the app crashes", "labels": ["bug", "billing"]})
        + "\n"
        + '{"text": ""}\n'
        + json.dumps({"id": "f2", "text": "refund me", "labels": ["bug", "billing"], "reply_to": "results:own"})
        + "\n"
    )
    sent = labelq("submit-file", str(source), "--reply-to", "results:file")
    assert sent.returncode == 1 and "2 submitted to bulk, 1 rejected" in sent.stdout, sent.stdout + sent.stderr
    assert "line 2: empty_text (text)" in sent.stderr
    deadline = time.monotonic() + 30
    while redis_lib.Redis.from_url(redis_url).llen("results:own") < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    first = labelq("results", "results:file")
    own = labelq("results", "results:own")
    assert [json.loads(line)["id"] for line in first.stdout.splitlines()] == ["f1"]
    assert [json.loads(line)["id"] for line in own.stdout.splitlines()] == ["f2"]


def test_celery_command_starts_the_same_worker(redis_url: str, client: Client, tmp_path: Any) -> None:
    env = {**os.environ, "LABELQ_REDIS_URL": redis_url, "LABELQ_INTRA_OP_THREADS": "1"}
    with (tmp_path / "celery.log").open("wb") as log:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "worker.celery_app",
                "worker",
                "-n",
                "plain-celery@%h",
                "--without-mingle",
                "--without-gossip",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        assert client.wait_for_workers(60), (tmp_path / "celery.log").read_text()[-3000:]
        request_id = client.submit(ClassifyRequest(text="my parcel never arrived", labels=ROUTING))  # type: ignore[arg-type]
        result = client.wait(request_id, timeout_s=30)
        assert isinstance(result, ClassificationResult) and result.top == "delivery"
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def test_worker_processes_do_not_outlive_a_killed_parent(start_worker: WorkerFactory, client: Client) -> None:
    import psutil

    parent = start_worker(worker_processes=2)
    deadline = time.monotonic() + 60
    while len(client.workers()) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    pids = [info["pid"] for info in client.workers().values()]
    assert len(pids) == 2
    parent.send_signal(signal.SIGKILL)  # the parent alone: no chance to forward anything
    parent.wait()

    def alive(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(pid) for pid in pids), "worker processes outlived their parent"


def test_the_producer_sends_the_compact_wire_form(client: Client) -> None:
    """No worker: the message the producer LPUSHed is read back off the queue as any worker would see it."""
    labels = ["billing", {"name": "bug", "threshold": 0.7}]
    client.submit({"id": "wire-1", "text": "the app crashed", "labels": labels}, queue="bulk")
    envelope = json.loads(client.redis.rpop(QUEUE_BULK))  # type: ignore[arg-type]
    args, kwargs, _ = json.loads(base64.b64decode(envelope["body"]))
    assert kwargs == {} and args[0]["labels"] == labels  # a name alone travels as the bare string
    # null fields (reply_to, deadline, model, ...) are left out, and multi_label unless the producer set it
    assert set(args[0]) == {"schema_version", "id", "text", "labels", "metadata", "submitted_at"}
