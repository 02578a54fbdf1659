"""Webhook jobs in Redis: scheduled by due time, claimed by a delivery task, rescheduled or dead-lettered.

    labelq:webhooks:scheduled   sorted set, job JSON scored by the time it is due
    labelq:webhooks:claimed     sorted set, job JSON handed to a delivery task, scored by when the claim expires

The classification worker schedules a job in the same Redis round trip that stores the result (before the
ack). A webhook worker's scheduler claims due jobs atomically (a Lua script moves them from scheduled to
claimed) and sends one Celery task per job; the task attempts the delivery and, in one script, writes the job's
next state (rescheduled with its attempts so far, or dead-lettered, or nothing once delivered) and drops the claim
last: a write that fails (a key of another type, a due time Redis refuses) stops the script before the claim goes,
so the job stays claimed. A claim that expires (the delivering process died, or settling it failed) goes back to
scheduled: at-least-once, never lost, never re-classified.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import redis
from pydantic import BaseModel, ConfigDict, Field

from schemas import ErrorCode, ErrorResult
from schemas.result import single_error
from schemas.transport import (
    DEAD_LETTER_KEY,
    QUEUE_WEBHOOKS,
    RESULT_KEY,
    WEBHOOK_CLAIMED_KEY,
    WEBHOOK_SCHEDULE_KEY,
)
from worker import tracing
from worker.constants import DEAD_LETTERS_MAX
from worker.deadletters import DeadLetter
from worker.delivery.egress import EgressPolicy
from worker.delivery.webhooks import SECRET_INVALID, Attempt, RetryPolicy, WebhookHttp, attempt_delivery

log = logging.getLogger(__name__)
DEFAULT_SECRET = "default"
DEFER_S = 1.0  # a job whose receiver is at its bound is due again after this long

# KEYS: scheduled, claimed; ARGV: now, limit, claim expiry. Moves up to `limit` due jobs into claimed.
_CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, job in ipairs(due) do
  redis.call('ZREM', KEYS[1], job)
  redis.call('ZADD', KEYS[2], ARGV[3], job)
end
return due
"""
# KEYS: claimed, scheduled; ARGV: now. Puts jobs whose claim expired back, due now.
_RECLAIM = """
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
for _, job in ipairs(stale) do
  redis.call('ZREM', KEYS[1], job)
  redis.call('ZADD', KEYS[2], ARGV[1], job)
end
return #stale
"""
# KEYS: claimed, scheduled, dead letters, result; ARGV: the claimed job, the rescheduled job ('' none), its due time,
# a dead letter ('' none), dead letters kept, a result ('' none), its ttl. The claim is dropped last: an error in
# any write before it ends the script with the job still claimed (a claim that expires is put back).
_SETTLE = """
if ARGV[2] ~= '' then redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2]) end
if ARGV[4] ~= '' then
  redis.call('RPUSH', KEYS[3], ARGV[4])
  redis.call('LTRIM', KEYS[3], -tonumber(ARGV[5]), -1)
end
if ARGV[6] ~= '' then redis.call('SET', KEYS[4], ARGV[6], 'EX', ARGV[7]) end
return redis.call('ZREM', KEYS[1], ARGV[1])
"""


class WebhookJob(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    job_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    request_id: str | None  # also the `webhook-id` header: stable across retries
    url: str
    secret_name: str = DEFAULT_SECRET
    body: str  # the result JSON exactly as signed and sent
    attempts: tuple[dict[str, Any], ...] = ()
    created_at_s: float = Field(default_factory=time.time)

    def with_attempt(self, attempt: Attempt) -> WebhookJob:
        return self.model_copy(update={"attempts": (*self.attempts, attempt.to_dict())})

    def attempt_records(self) -> list[Attempt]:
        return [Attempt(**record) for record in self.attempts]

    @property
    def message_id(self) -> str:
        return self.request_id or self.job_id


@dataclass(frozen=True, slots=True)
class Scheduler:
    client: redis.Redis

    def schedule(self, pipe: redis.client.Pipeline, job: WebhookJob, due_s: float) -> None:
        pipe.zadd(WEBHOOK_SCHEDULE_KEY, {job.model_dump_json(): due_s})

    def claim_due(self, now_s: float, limit: int, claim_s: float) -> list[str]:
        claimed = self.client.eval(_CLAIM, 2, WEBHOOK_SCHEDULE_KEY, WEBHOOK_CLAIMED_KEY, now_s, limit, now_s + claim_s)
        return [item.decode() if isinstance(item, bytes) else str(item) for item in cast(list[Any], claimed)]

    def reclaim_expired(self, now_s: float) -> int:
        return int(cast(int, self.client.eval(_RECLAIM, 2, WEBHOOK_CLAIMED_KEY, WEBHOOK_SCHEDULE_KEY, now_s)))

    def pending(self) -> tuple[int, int]:
        """(scheduled, claimed) counts."""
        return int(self.client.zcard(WEBHOOK_SCHEDULE_KEY)), int(self.client.zcard(WEBHOOK_CLAIMED_KEY))


REFUSALS = (
    "webhook_private_address",
    "webhook_host_not_allowed",
    "webhook_url_invalid",
    "webhook_secret_unknown",
    SECRET_INVALID,
)


def dead_letter_reason(last: Attempt) -> str:
    """A stable word for why a webhook job was given up."""
    if last.error and last.error.startswith(REFUSALS):
        return last.error.split(":", 1)[0]
    if last.status == 410:
        return "webhook_gone"
    if last.outcome == "retry":
        return "webhook_retries_exhausted"
    return "webhook_rejected"


def refusal(job: WebhookJob, last: Attempt) -> ErrorResult | None:
    """The ErrorResult stored under the request id when the webhook may not be delivered to at all."""
    if job.request_id is None or not last.error or not last.error.startswith(REFUSALS):
        return None
    return single_error(job.request_id, ErrorCode.WEBHOOK_REFUSED, last.error, "reply_to")


WEBHOOK_SERVICE_NAME = "labelq-webhook-worker"  # its traces' service, unless OTEL_SERVICE_NAME names one


class WebhookDeliverer:
    """Runs one claimed job: attempt, then drop the claim and reschedule, dead-letter or finish, atomically."""

    def __init__(
        self,
        client: redis.Redis,
        http: WebhookHttp,
        *,
        egress: EgressPolicy,
        retry: RetryPolicy,
        secrets: Mapping[str, str],
        timeout_s: float,
        result_ttl_s: int,
        per_receiver: int = 1_000_000,
    ) -> None:
        """`per_receiver`: the most attempts this process runs at once to one receiver (host and port); a job
        past it is deferred, not attempted, so one slow receiver with many jobs cannot hold every thread."""
        self.client = client
        self.http = http
        self.egress = egress
        self.retry = retry
        self.secrets = secrets
        self.timeout_s = timeout_s
        self.result_ttl_s = result_ttl_s
        self.per_receiver = per_receiver
        self.scheduler = Scheduler(client)
        tracing.configure(WEBHOOK_SERVICE_NAME)  # this process's tracing, when OTEL_* asks for it
        self._busy: Counter[str] = Counter()  # receiver -> attempts in progress in this process
        self._busy_lock = threading.Lock()

    def run(self, claimed_json: str) -> Attempt:
        """Attempt a job the scheduler claimed. A delivery task is an ordinary Celery message that any producer
        of this broker can send: a job that is not in the claimed set (forged, or already settled) is refused
        before anything is signed or sent, so sending tasks does not lend anyone the webhook secrets."""
        if self.client.zscore(WEBHOOK_CLAIMED_KEY, claimed_json) is None:
            log.warning("a webhook delivery task for a job the scheduler did not claim was refused")
            return Attempt(time.time(), "give_up", error="not_claimed: no claimed webhook job is this one")
        job = WebhookJob.model_validate_json(claimed_json)
        secret = self.secrets.get(job.secret_name)
        if secret is None:
            attempt = Attempt(
                time.time(),
                "give_up",
                error=f"webhook_secret_unknown: no secret named "
                f"{job.secret_name!r} is configured on the webhook worker",
            )
        else:
            receiver = _receiver(job.url)
            if not self._enter(receiver):
                return self._defer(claimed_json, job, receiver)
            try:
                with tracing.webhook(job.body, job.url, len(job.attempts) + 1) as span:
                    attempt = attempt_delivery(
                        self.http,
                        self.egress,
                        url=job.url,
                        body=job.body.encode(),
                        message_id=job.message_id,
                        secret=secret,
                        timeout_s=self.timeout_s,
                    )
                    tracing.attempted(span, attempt.outcome, attempt.status, attempt.error)
            finally:
                self._leave(receiver)
        job = job.with_attempt(attempt)
        delay = self.retry.next_delay_s(job.attempt_records())
        rescheduled = letter = result = ""
        due_s = 0.0
        if attempt.outcome == "retry" and delay is not None:
            rescheduled, due_s = job.model_dump_json(), time.time() + delay
        elif attempt.outcome != "delivered":
            letter = DeadLetter(
                dead_letter_reason(attempt),
                QUEUE_WEBHOOKS,
                job.model_dump_json().encode(),
                job.request_id,
                detail=attempt.error or f"HTTP {attempt.status}",
                attempts=list(job.attempts),
            ).to_json(time.time())
            refused = refusal(job, attempt)
            if refused is not None and job.request_id:
                result = refused.model_dump_json()
        self._settle(claimed_json, job.request_id, rescheduled, due_s, letter, result)
        return attempt

    def _settle(
        self,
        claimed_json: str,
        request_id: str | None,
        rescheduled: str = "",
        due_s: float = 0.0,
        letter: str = "",
        result: str = "",
    ) -> None:
        """Write a claimed job's next state, then drop its claim, in one script (_SETTLE): when a write fails the
        claim stays, the error propagates, and the job comes back when the claim expires."""
        keys = (WEBHOOK_CLAIMED_KEY, WEBHOOK_SCHEDULE_KEY, DEAD_LETTER_KEY, RESULT_KEY + (request_id or ""))
        argv = (claimed_json, rescheduled, repr(due_s), letter, DEAD_LETTERS_MAX, result, self.result_ttl_s)
        self.client.eval(_SETTLE, len(keys), *keys, *argv)

    def _enter(self, receiver: str) -> bool:
        with self._busy_lock:
            if self._busy[receiver] >= self.per_receiver:
                return False
            self._busy[receiver] += 1
            return True

    def _leave(self, receiver: str) -> None:
        with self._busy_lock:
            self._busy[receiver] -= 1
            if not self._busy[receiver]:
                del self._busy[receiver]

    def _defer(self, claimed_json: str, job: WebhookJob, receiver: str) -> Attempt:
        """Back to the schedule, due in DEFER_S, with no attempt counted: its receiver has as many deliveries
        in progress here as it may."""
        self._settle(claimed_json, job.request_id, job.model_dump_json(), time.time() + DEFER_S)
        return Attempt(
            time.time(), "deferred", error=f"deferred: {self.per_receiver} deliveries to {receiver} in progress"
        )


def _receiver(url: str) -> str:
    """Who a delivery goes to, for the per-receiver bound: the URL's host and port as named (before resolution)."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.hostname or ''}:{port or (443 if parts.scheme == 'https' else 80)}"
