"""The only module that configures Celery: `create_app(settings)`.

The worker consumes labelq's request queues with its own batching step (worker/consumer.py) in pool `solo`:
one process, one warm model session; run one process per core (`labelq worker --processes N`, or several
`celery -A worker.celery_app worker` commands, or `docker compose up --scale worker=N`).
"""

from __future__ import annotations

from celery import Celery

from worker.constants import QUEUE_TASKS
from worker.settings import Settings


def create_app(settings: Settings) -> Celery:
    from worker.consumer import BatchConsumerStep

    app = Celery("labelq", broker=settings.redis_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_acks_late=True,  # Celery's own tasks (webhook delivery) ack after they ran
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_pool="solo",  # the model runs in the worker process; scale by processes
        worker_concurrency=1,
        task_default_queue=QUEUE_TASKS,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # keep trying through a Redis restart
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout_s,
            "unacked_restore_interval": settings.unacked_restore_interval_s,
            "unacked_restore_throttle": 1,  # every interval really sweeps
        },
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    app.labelq_settings = settings  # read by BatchConsumerStep.start
    app.steps["consumer"].add(BatchConsumerStep)
    return app
