"""`labelq health`: is the service able to answer? Redis, ready workers and their models, queue depths."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from producer import Client
from schemas.transport import DEAD_LETTER_KEY, QUEUES, WEBHOOK_CLAIMED_KEY, WEBHOOK_SCHEDULE_KEY
from worker.stream.redis_queue import ReliableQueue

HEALTHY, NO_WORKER, REDIS_DOWN = 0, 1, 2  # exit codes


@dataclass
class Health:
    redis: str  # "ok" or the error
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)  # ready workers, as they announce themselves
    pinged: list[str] = field(default_factory=list)  # Celery nodes that answered a ping
    depths: dict[str, int] = field(default_factory=dict)

    @property
    def status(self) -> int:
        if self.redis != "ok":
            return REDIS_DOWN
        return HEALTHY if self.workers else NO_WORKER

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": ["healthy", "no ready worker", "redis unreachable"][self.status]}


def check(redis_url: str, ping_timeout_s: float = 1.0, transport_options: dict[str, Any] | None = None) -> Health:
    client = Client(redis_url, transport_options=transport_options)
    try:
        client.redis.ping()
    except redis.RedisError as exc:
        client.close()
        return Health(redis=f"{type(exc).__name__}: {exc}")
    try:
        requests = ReliableQueue(client.redis, transport_options)  # a queue's priority sub-lists count too
        depths = {name: requests.waiting(queue) for name, queue in QUEUES.items()}
        depths |= {
            "in_flight": requests.in_flight(),
            "webhooks_scheduled": int(client.redis.zcard(WEBHOOK_SCHEDULE_KEY)),
            "webhooks_in_delivery": int(client.redis.zcard(WEBHOOK_CLAIMED_KEY)),
            "dead_letters": int(client.redis.llen(DEAD_LETTER_KEY)),
        }
        pinged = sorted(name for reply in client.ping_workers(ping_timeout_s) for name in reply)
        return Health(redis="ok", workers=client.workers(), pinged=pinged, depths=depths)
    finally:
        client.close()
