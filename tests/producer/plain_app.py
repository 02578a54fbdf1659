"""A plain Celery app with no labelq code in it (tests/producer/test_submit_many_chunks.py): its worker runs a task
named `labelq.classify` that keeps the arguments it was given in Redis, so a test can see what a standard Celery
worker makes of the messages `Client.submit_many` sends."""

from __future__ import annotations

import json
import os
from typing import Any

import redis
from celery import Celery

BROKER = os.environ.get("PLAIN_BROKER", "redis://127.0.0.1:6379/15")
SEEN_KEY = "plain:seen"  # a list: one JSON [task id, args] a task run

app = Celery("plain", broker=BROKER)
app.conf.update(worker_hijack_root_logger=False, task_serializer="json", accept_content=["json"])


@app.task(name="labelq.classify", bind=True)
def classify(self: Any, request: dict[str, Any]) -> None:
    client = redis.Redis.from_url(BROKER)
    client.rpush(SEEN_KEY, json.dumps([self.request.id, request]))
    client.close()
