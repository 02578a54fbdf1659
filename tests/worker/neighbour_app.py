"""Another team's plain Celery app on the database a labelq worker uses (tests/worker/test_neighbours.py): one
`acks_late` task that counts its runs in Redis."""

from __future__ import annotations

import os
import time

import redis
from celery import Celery

BROKER = os.environ.get("NEIGHBOUR_BROKER", "redis://127.0.0.1:6379/15")
RUNS_KEY = "neighbour:runs"
DONE_KEY = "neighbour:done"

app = Celery("neighbour", broker=BROKER)
app.conf.update(
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_default_queue="neighbour",
    broker_transport_options={"visibility_timeout": 3600},  # Celery's default: its tasks may run up to an hour
    worker_hijack_root_logger=False,
)


@app.task(name="neighbour.slow")
def slow(seconds: float) -> None:
    client = redis.Redis.from_url(BROKER)
    client.incr(RUNS_KEY)
    time.sleep(seconds)
    client.incr(DONE_KEY)
