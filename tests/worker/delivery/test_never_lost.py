"""A webhook job is never lost when settling its attempt fails: it stays claimed, and comes back when the claim
expires (a due time Redis refuses, a key of another type where the schedule or the dead letters live)."""

from __future__ import annotations

import time

import httpx
import redis as redis_lib

from schemas.transport import DEAD_LETTER_KEY, WEBHOOK_CLAIMED_KEY, WEBHOOK_SCHEDULE_KEY
from tests.worker.delivery.test_webhook_jobs import BODY, deliverer, schedule
from worker.delivery.webhook_jobs import Scheduler, WebhookJob
from worker.delivery.webhooks import RetryPolicy


def claimed_job(client: redis_lib.Redis, request_id: str) -> str:
    schedule(client, WebhookJob(request_id=request_id, url="https://hooks.example/h", body=BODY), time.time() - 1)
    (claimed,) = Scheduler(client).claim_due(time.time(), limit=1, claim_s=30)
    return claimed


def test_a_due_time_redis_refuses_leaves_the_job_claimed(redis_url: str) -> None:
    client = redis_lib.Redis.from_url(redis_url)
    down = deliverer(redis_url, "93.184.216.34", lambda request: httpx.Response(503))
    object.__setattr__(down, "retry", RetryPolicy(delays_s=(float("nan"),)))  # what LABELQ_* now refuses
    job = claimed_job(client, "nan-delay")
    try:
        down.run(job)
    except redis_lib.ResponseError as exc:
        assert "float" in str(exc)
    else:
        raise AssertionError("a NaN due time was accepted")
    assert client.zscore(WEBHOOK_CLAIMED_KEY, job) is not None  # still claimed: its expiry brings it back
    assert client.zcard(WEBHOOK_SCHEDULE_KEY) == 0
    assert Scheduler(client).reclaim_expired(time.time() + 60) == 1


def test_a_schedule_key_of_another_type_leaves_the_job_claimed(redis_url: str) -> None:
    client = redis_lib.Redis.from_url(redis_url)
    job = claimed_job(client, "wrongtype")
    client.delete(WEBHOOK_SCHEDULE_KEY)
    client.set(WEBHOOK_SCHEDULE_KEY, "not a sorted set")
    down = deliverer(redis_url, "93.184.216.34", lambda request: httpx.Response(503))
    try:
        down.run(job)
    except redis_lib.ResponseError as exc:
        assert "WRONGTYPE" in str(exc)
    else:
        raise AssertionError("rescheduling into a string key succeeded")
    assert client.zscore(WEBHOOK_CLAIMED_KEY, job) is not None


def test_a_dead_letter_key_of_another_type_leaves_the_job_claimed(redis_url: str) -> None:
    client = redis_lib.Redis.from_url(redis_url)
    job = claimed_job(client, "gone")
    client.set(DEAD_LETTER_KEY, "not a list")
    gone = deliverer(redis_url, "93.184.216.34", lambda request: httpx.Response(410))
    try:
        gone.run(job)
    except redis_lib.ResponseError as exc:
        assert "WRONGTYPE" in str(exc)
    else:
        raise AssertionError("dead-lettering into a string key succeeded")
    assert client.zscore(WEBHOOK_CLAIMED_KEY, job) is not None
