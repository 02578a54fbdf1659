"""Writing outcomes to Redis: results by id, result queues, webhook jobs, dead letters, delivery counters.

For every outcome with an id: `labelq:result:<id>` holds the result JSON (TTL `result_ttl_s`) and
`labelq:notify:<id>` receives one element (for `wait(id)`). When the request named a result queue, the result
JSON is also RPUSHed onto that Redis list (TTL refreshed); when it named a webhook, a delivery job is scheduled
(worker/webhook_jobs.py). All of a batch's writes go in one pipeline, before any message is acked.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis

from schemas.transport import DEAD_LETTER_KEY, NOTIFY_KEY, RESULT_KEY
from worker.constants import DELIVERIES_KEY, DELIVERIES_TTL_S
from worker.deadletters import DeadLetter
from worker.results import Answer, Answered
from worker.webhook_jobs import DEFAULT_SECRET, Scheduler, WebhookJob


def payload(outcome: Answered) -> str:
    """The published JSON of an outcome."""
    return outcome.json() if isinstance(outcome, Answer) else outcome.model_dump_json()


@dataclass(frozen=True, slots=True)
class Publication:
    outcome: Answered
    reply_queue: str | None = None  # a Redis list to RPUSH the result onto
    webhook_url: str | None = None  # a URL to POST the result to (by a webhook worker)
    webhook_secret: str | None = None  # the name of the signing secret


class Publisher:
    def __init__(self, client: redis.Redis, result_ttl_s: int) -> None:
        self.client = client
        self.result_ttl_s = result_ttl_s
        self.scheduler = Scheduler(client)

    def count_deliveries(self, message_ids: Sequence[str]) -> list[int]:
        """Increment and return each message's delivery count (Redis keeps none of its own)."""
        pipe = self.client.pipeline(transaction=False)
        for message_id in message_ids:
            pipe.incr(DELIVERIES_KEY + message_id)
            pipe.expire(DELIVERIES_KEY + message_id, DELIVERIES_TTL_S)
        replies = pipe.execute()
        return [int(n) for n in replies[::2]]

    def publish(
        self, publications: Sequence[Publication], dead_letters: Sequence[DeadLetter], done_ids: Sequence[str]
    ) -> None:
        """Every write of one batch, in one round trip. Raises on a Redis error: nothing is acked then."""
        ttl = self.result_ttl_s
        now_s = time.time()
        pipe = self.client.pipeline(transaction=False)
        for item in publications:
            body = payload(item.outcome)
            if item.outcome.id:
                pipe.set(RESULT_KEY + item.outcome.id, body, ex=ttl)
                pipe.rpush(NOTIFY_KEY + item.outcome.id, 1)
                pipe.expire(NOTIFY_KEY + item.outcome.id, ttl)
            if item.reply_queue:
                pipe.rpush(item.reply_queue, body)
            if item.webhook_url:
                job = WebhookJob(
                    request_id=item.outcome.id,
                    url=item.webhook_url,
                    body=body,
                    secret_name=item.webhook_secret or DEFAULT_SECRET,
                )
                self.scheduler.schedule(pipe, job, now_s)
        for queue in dict.fromkeys(item.reply_queue for item in publications if item.reply_queue):
            pipe.expire(queue, ttl)  # once per result queue per batch, after its last push
        for letter in dead_letters:
            pipe.rpush(DEAD_LETTER_KEY, letter.to_json(now_s))
        if done_ids:
            pipe.delete(*(DELIVERIES_KEY + message_id for message_id in done_ids))
        if len(pipe):
            pipe.execute()
