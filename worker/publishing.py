"""Writing outcomes to Redis: results by id, result queues, dead letters, delivery counters.

For every outcome with an id: `labelq:result:<id>` holds the result JSON (TTL `result_ttl_s`) and
`labelq:notify:<id>` receives one element (for `wait(id)`). When the request named a result queue, the result
JSON is also RPUSHed onto that Redis list (TTL refreshed). All of a batch's writes go in one pipeline.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from schemas import ClassificationResult, ErrorResult
from worker.constants import DEAD_LETTER_KEY, DELIVERIES_KEY, DELIVERIES_TTL_S, NOTIFY_KEY, RESULT_KEY

Outcome = ClassificationResult | ErrorResult


@dataclass(frozen=True, slots=True)
class Publication:
    outcome: Outcome
    reply_to: str | None  # a queue name (webhooks are delivered by their own task)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: str  # undecodable | invalid_request | too_many_deliveries | webhook_... (stable words)
    queue: str
    raw: bytes
    message_id: str | None = None
    detail: str | None = None
    error: dict[str, Any] | None = None

    def to_json(self, now_s: float) -> str:
        return json.dumps(
            {
                "reason": self.reason,
                "queue": self.queue,
                "message_id": self.message_id,
                "detail": self.detail,
                "error": self.error,
                "raw": self.raw.decode("utf-8", errors="backslashreplace"),
                "at": now_s,
            }
        )


class Publisher:
    def __init__(self, client: redis.Redis, result_ttl_s: int) -> None:
        self.client = client
        self.result_ttl_s = result_ttl_s

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
        pipe = self.client.pipeline(transaction=False)
        for item in publications:
            payload = item.outcome.model_dump_json()
            if item.outcome.id:
                pipe.set(RESULT_KEY + item.outcome.id, payload, ex=ttl)
                pipe.rpush(NOTIFY_KEY + item.outcome.id, 1)
                pipe.expire(NOTIFY_KEY + item.outcome.id, ttl)
            if item.reply_to:
                pipe.rpush(item.reply_to, payload)
                pipe.expire(item.reply_to, ttl)
        now_s = time.time()
        for letter in dead_letters:
            pipe.rpush(DEAD_LETTER_KEY, letter.to_json(now_s))
        for message_id in done_ids:
            pipe.delete(DELIVERIES_KEY + message_id)
        if len(pipe):
            pipe.execute()
