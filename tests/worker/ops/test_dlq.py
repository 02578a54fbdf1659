"""`labelq dlq`: list with counts, show, replay (classification or delivery), purge."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from typing import Any

from producer import Client
from schemas import ClassificationResult, ClassifyRequest, ErrorResult
from schemas.transport import DEAD_LETTER_KEY, QUEUE_REALTIME
from tests.conftest import WorkerFactory
from tests.webhook_receiver import Receiver
from tests.worker.delivery.test_webhooks_e2e import SECRET, WEBHOOK_SETTINGS, wait_until
from tests.worker.test_streaming import raw_celery_message


def labelq(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LABELQ_REDIS_URL": redis_url}
    return subprocess.run(
        [sys.executable, "-m", "labelq.cli", "dlq", *args], env=env, capture_output=True, text=True, timeout=60
    )


def letters(client: Client) -> list[dict[str, Any]]:
    return [json.loads(x) for x in client.redis.lrange(DEAD_LETTER_KEY, 0, -1)]


def test_replay_after_fixing_the_configuration(start_worker: WorkerFactory, client: Client, redis_url: str) -> None:
    strict = start_worker(max_labels=2)
    labels = ["billing", "technical problem", "praise"]
    first = client.submit(ClassifyRequest(id="too-many", text="I was charged twice", labels=labels))  # type: ignore[arg-type]
    garbage = json.loads(raw_celery_message({}, QUEUE_REALTIME))
    garbage["body"] = base64.b64encode(b"not json").decode()
    client.redis.lpush(QUEUE_REALTIME, json.dumps(garbage))
    rejected = client.wait(first, timeout_s=30)
    assert isinstance(rejected, ErrorResult) and rejected.code == "too_many_labels"
    assert wait_until(lambda: len(letters(client)) == 2, 10)

    listed = labelq(redis_url, "list")
    assert listed.returncode == 0 and "2 dead letters" in listed.stdout
    assert "invalid_request: 1" in listed.stdout and "undecodable: 1" in listed.stdout
    by_reason = {letter["reason"]: letter for letter in letters(client)}
    shown = labelq(redis_url, "show", by_reason["invalid_request"]["id"])
    assert json.loads(shown.stdout)["message_id"] == "too-many"

    undecodable = labelq(redis_url, "replay", by_reason["undecodable"]["id"])
    assert undecodable.returncode == 1 and "nothing to replay" in undecodable.stderr.replace(
        "holds no request", "nothing"
    )

    strict.terminate()
    strict.wait(timeout=30)
    client.redis.delete("labelq:result:too-many")
    start_worker(max_labels=10)  # the fix
    replayed = labelq(redis_url, "replay", by_reason["invalid_request"]["id"])
    assert replayed.returncode == 0 and "request too-many resubmitted" in replayed.stdout
    result = client.wait("too-many", timeout_s=30)
    assert isinstance(result, ClassificationResult) and result.top == "billing"
    assert [letter["reason"] for letter in letters(client)] == ["undecodable"]

    purged = labelq(redis_url, "purge", "--reason", "undecodable", "--yes")
    assert purged.returncode == 0 and "purged 1" in purged.stdout and letters(client) == []


def test_replay_a_webhook_without_reclassifying(start_worker: WorkerFactory, client: Client, redis_url: str) -> None:
    gone_until = [True]
    receiver = Receiver(SECRET, lambda n: (410, 0.0) if gone_until[0] else (200, 0.0))
    server, url = receiver.serve()
    try:
        start_worker(**WEBHOOK_SETTINGS)
        start_worker(role="webhooks", **WEBHOOK_SETTINGS)
        client.submit(
            ClassifyRequest(
                id="hook-1",
                text="I was charged twice",
                labels=["billing", "bug"],  # type: ignore[arg-type]
                reply_to=f"{url}/hook",
            )
        )
        assert wait_until(lambda: len(letters(client)) == 1, 30)
        (letter,) = letters(client)
        assert letter["reason"] == "webhook_gone"
        gone_until[0] = False  # the receiver is fixed
        replayed = labelq(redis_url, "replay", "--all", "--reason", "webhook_gone")
        assert replayed.returncode == 0 and "scheduled again" in replayed.stdout
        assert wait_until(lambda: len(receiver.deliveries) == 1, 30)
        assert receiver.deliveries[0].verified and receiver.deliveries[0].webhook_id == "hook-1"
        assert letters(client) == []
    finally:
        server.shutdown()
        server.server_close()
