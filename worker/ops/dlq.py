"""Operating on the dead-letter list (`labelq dlq`): read, find, purge, replay."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis

from schemas.transport import DEAD_LETTER_KEY, QUEUE_WEBHOOKS
from worker.deadletters import parse_stored
from worker.delivery.webhook_jobs import Scheduler, WebhookJob
from worker.stream.messages import Delivery, UndecodableMessage, decode


class NotReplayable(ValueError):
    """This dead letter cannot be sent again as it is (the message says why)."""


def read(
    client: redis.Redis, reason: str | None = None, skipped: list[tuple[int, bytes, str]] | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """(stored JSON, parsed) for every dead letter, oldest first, optionally of one reason. An item that is no
    dead letter is left where it is and out of the rows; `skipped` gets (its index, its bytes, why)."""
    rows = []
    for index, raw in enumerate(client.lrange(DEAD_LETTER_KEY, 0, -1)):
        try:
            text, letter = parse_stored(raw)
        except ValueError as exc:
            if skipped is not None:
                skipped.append((index, raw if isinstance(raw, bytes) else str(raw).encode(), str(exc)))
            continue
        if reason is None or letter.get("reason") == reason:
            rows.append((text, letter))
    return rows


def find(client: redis.Redis, letter_id: str) -> tuple[str, dict[str, Any]] | None:
    return next(((text, letter) for text, letter in read(client) if letter.get("id") == letter_id), None)


def purge(client: redis.Redis, reason: str | None = None) -> int:
    if reason is None:
        count = int(client.llen(DEAD_LETTER_KEY))
        client.delete(DEAD_LETTER_KEY)
        return count
    return sum(int(client.lrem(DEAD_LETTER_KEY, 1, text)) for text, _ in read(client, reason))


def replay(client: redis.Redis, text: str, letter: dict[str, Any], submit: Callable[[str, str], str]) -> str:
    """Send a dead letter again and drop it from the list; returns what was done.

    A webhook job is scheduled again with its attempts reset (the result is not re-classified). A request is
    resubmitted for classification under its own id, to the queue it came from (`submit(request_json, queue)`),
    as a new message (its deliveries counted afresh). An undecodable message has nothing to replay."""
    reason = str(letter.get("reason"))
    if letter.get("raw_truncated"):
        raise NotReplayable(f"the message was {letter.get('raw_bytes')} bytes and only its start was kept")
    if letter.get("queue") == QUEUE_WEBHOOKS:
        job = WebhookJob.model_validate_json(letter["raw"]).model_copy(update={"attempts": ()})
        pipe = client.pipeline(transaction=True)
        Scheduler(client).schedule(pipe, job, time.time())
        pipe.lrem(DEAD_LETTER_KEY, 1, text)
        pipe.execute()
        return f"webhook to {job.url} scheduled again"
    if reason == "undecodable":
        raise NotReplayable("an undecodable message holds no request to replay; inspect it with `show`, then purge")
    delivery = Delivery(
        str(letter.get("queue")),
        letter["raw"].encode("utf-8", errors="surrogateescape"),
        letter.get("headers") or {},
        "application/json",
        time.time(),
    )
    try:
        envelope = decode(delivery)
    except UndecodableMessage as exc:
        raise NotReplayable(str(exc)) from None
    request_id = submit(envelope.request_json(), str(letter.get("queue")))
    client.lrem(DEAD_LETTER_KEY, 1, text)
    return f"request {request_id} resubmitted to {letter.get('queue')}"
