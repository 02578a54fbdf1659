"""Webhook jobs in a real Redis: claim and reclaim, and the delivery-time refusal of a name that resolves inside."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import redis as redis_lib

from schemas import ErrorCode, parse_result
from schemas.transport import DEAD_LETTER_KEY, RESULT_KEY, WEBHOOK_CLAIMED_KEY, WEBHOOK_SCHEDULE_KEY
from tests.schemas.test_webhook_signatures import SECRET
from worker.delivery.egress import EgressPolicy
from worker.delivery.webhook_jobs import Scheduler, WebhookDeliverer, WebhookJob
from worker.delivery.webhooks import RetryPolicy, WebhookHttp

BODY = json.dumps({"status": "ok", "id": "r1"})


OPENED: list[WebhookHttp] = []


@pytest.fixture(autouse=True)
def _close_http() -> Iterator[None]:
    """Each test's WebhookHttp closed (its event loops and clients), so none is left to the garbage collector."""
    yield
    while OPENED:
        OPENED.pop().close()


def deliverer(redis_url: str, resolves_to: str, handler: object = None) -> WebhookDeliverer:
    transport = httpx.MockTransport(handler or (lambda request: httpx.Response(200)))  # type: ignore[arg-type]
    OPENED.append(WebhookHttp(transport=transport))
    return WebhookDeliverer(
        redis_lib.Redis.from_url(redis_url),
        OPENED[-1],
        egress=EgressPolicy(resolver=lambda host, port: [resolves_to]),
        retry=RetryPolicy(delays_s=(1.0,)),
        secrets={"default": SECRET},
        timeout_s=1.0,
        result_ttl_s=60,
    )


def schedule(client: redis_lib.Redis, job: WebhookJob, due_s: float) -> None:
    pipe = client.pipeline()
    Scheduler(client).schedule(pipe, job, due_s)
    pipe.execute()


def test_claim_takes_only_due_jobs_and_expired_claims_come_back(redis_url: str) -> None:
    client = redis_lib.Redis.from_url(redis_url)
    scheduler = Scheduler(client)
    now = time.time()
    schedule(client, WebhookJob(request_id="due", url="https://a.example/h", body=BODY), now - 1)
    schedule(client, WebhookJob(request_id="later", url="https://a.example/h", body=BODY), now + 60)
    claimed = scheduler.claim_due(now, limit=10, claim_s=5)
    assert [WebhookJob.model_validate_json(j).request_id for j in claimed] == ["due"]
    assert scheduler.pending() == (1, 1)
    assert scheduler.claim_due(now, limit=10, claim_s=5) == []  # a claimed job is not handed out twice
    assert scheduler.reclaim_expired(now + 1) == 0
    assert scheduler.reclaim_expired(now + 6) == 1  # its deliverer died: due again
    assert [WebhookJob.model_validate_json(j).request_id for j in scheduler.claim_due(now + 6, 10, 5)] == ["due"]


def test_a_name_that_resolves_to_a_private_address_is_refused_at_delivery(redis_url: str) -> None:
    client = redis_lib.Redis.from_url(redis_url)
    calls: list[httpx.Request] = []
    runner = deliverer(redis_url, "10.1.2.3", lambda request: calls.append(request) or httpx.Response(200))
    job = WebhookJob(request_id="r1", url="https://innocent.example.com/hook", body=BODY)
    schedule(client, job, time.time())
    (claimed,) = runner.scheduler.claim_due(time.time(), 10, 30)
    attempt = runner.run(claimed)
    assert attempt.outcome == "give_up" and calls == []  # never connected
    (letter,) = [json.loads(x) for x in client.lrange(DEAD_LETTER_KEY, 0, -1)]
    assert letter["reason"] == "webhook_private_address" and letter["message_id"] == "r1"
    stored = parse_result(client.get(RESULT_KEY + "r1"))  # type: ignore[arg-type]
    assert stored.status == "error" and stored.code == ErrorCode.WEBHOOK_REFUSED  # type: ignore[union-attr]
    assert client.zcard(WEBHOOK_CLAIMED_KEY) == 0 and client.zcard(WEBHOOK_SCHEDULE_KEY) == 0


def test_a_retry_is_rescheduled_with_its_attempts(redis_url: str) -> None:
    client = redis_lib.Redis.from_url(redis_url)
    runner = deliverer(redis_url, "93.184.216.34", lambda request: httpx.Response(503, headers={"retry-after": "7"}))
    schedule(client, WebhookJob(request_id="r2", url="https://hooks.example.com/h", body=BODY), time.time())
    (claimed,) = runner.scheduler.claim_due(time.time(), 10, 30)
    assert runner.run(claimed).outcome == "retry"
    ((member, due),) = client.zrange(WEBHOOK_SCHEDULE_KEY, 0, -1, withscores=True)
    job = WebhookJob.model_validate_json(member)
    assert [a["status"] for a in job.attempts] == [503] and due >= time.time() + 6  # Retry-After 7 s wins
    assert client.zcard(WEBHOOK_CLAIMED_KEY) == 0


def test_a_delivery_task_for_a_job_the_scheduler_did_not_claim_signs_and_sends_nothing(redis_url: str) -> None:
    """A delivery task is a Celery message any producer of the broker can send (to labelq.webhooks, or to
    labelq.tasks, where the classify worker has the task too): a forged job must not get a body signed."""
    client = redis_lib.Redis.from_url(redis_url)
    calls: list[httpx.Request] = []
    runner = deliverer(redis_url, "93.184.216.34", lambda request: calls.append(request) or httpx.Response(200))
    forged = WebhookJob(request_id="r9", url="https://victim.example.com/hook", body='{"status":"ok","top":"x"}')
    attempt = runner.run(forged.model_dump_json())
    assert attempt.outcome == "give_up" and calls == []  # nothing signed, nothing sent
    assert client.llen(DEAD_LETTER_KEY) == 0 and client.get(RESULT_KEY + "r9") is None
    schedule(client, WebhookJob(request_id="r3", url="https://hooks.example.com/h", body=BODY), time.time())
    (claimed,) = runner.scheduler.claim_due(time.time(), 10, 30)
    assert runner.run(claimed).outcome == "delivered" and len(calls) == 1  # a claimed job still goes out
    assert runner.run(claimed).outcome == "give_up" and len(calls) == 1  # and only once


def test_one_slow_receiver_with_many_jobs_cannot_hold_every_delivery_thread(redis_url: str) -> None:
    """Deliveries to one receiver past its bound are deferred at once, unattempted, so threads stay free for
    the others (before: a receiver's jobs took every thread for up to the timeout each)."""
    client = redis_lib.Redis.from_url(redis_url)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers["host"] == "slow.example.com":
            time.sleep(0.8)
        return httpx.Response(200)

    runner = deliverer(redis_url, "93.184.216.34", handler)
    runner.per_receiver = 2
    for i in range(6):
        schedule(client, WebhookJob(request_id=f"slow-{i}", url="https://slow.example.com/h", body=BODY), time.time())
    claimed = runner.scheduler.claim_due(time.time(), 10, 30)
    outcomes: list[str] = []
    threads = [threading.Thread(target=lambda job=job: outcomes.append(runner.run(job).outcome)) for job in claimed]
    for thread in threads:
        thread.start()
    time.sleep(0.2)
    assert sorted(outcomes) == ["deferred"] * 4  # at once, while two deliveries to it are in progress
    schedule(client, WebhookJob(request_id="ok", url="https://ok.example.com/h", body=BODY), time.time())
    (healthy,) = runner.scheduler.claim_due(time.time(), 10, 30)
    started = time.monotonic()
    assert runner.run(healthy).outcome == "delivered" and time.monotonic() - started < 0.5
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["deferred"] * 4 + ["delivered"] * 2
    deferred = [WebhookJob.model_validate_json(m) for m in client.zrange(WEBHOOK_SCHEDULE_KEY, 0, -1)]
    assert len(deferred) == 4 and all(job.attempts == () for job in deferred)  # due again, no attempt counted
    assert client.zcard(WEBHOOK_CLAIMED_KEY) == 0
