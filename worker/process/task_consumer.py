"""Celery's consumer, kept off labelq's request queues however a Celery user names them to it.

labelq's batching step (worker/process/consumer.py) claims `labelq.realtime` and `labelq.bulk` itself; Celery's own task
consumer listens on `labelq.tasks` only. Were Celery's consumer to take a request message, it would discard it as
an unregistered task. So, on a classification worker:

- `celery worker -Q labelq.realtime` means "this worker serves labelq.realtime": the batching step consumes the
  labelq queues -Q names (none named: both), Celery's consumer the other queues named (none: `labelq.tasks`);
- `control.add_consumer(<labelq queue>)` starts the batching step's claiming of that queue, and
  `control.cancel_consumer(<labelq queue>)` stops it (its batch in hand is finished and acked first);
- `inspect active_queues` lists the labelq queues the batching step consumes beside Celery's own.
"""

from __future__ import annotations

from typing import Any

from celery.worker.consumer import Consumer
from celery.worker.control import inspect_command
from kombu import Exchange, Queue

from schemas.transport import QUEUES
from worker.constants import QUEUE_TASKS

REQUEST_QUEUES = tuple(QUEUES.values())  # claimed by the batching step only, realtime first


def take_request_queues(app: Any) -> tuple[str, ...] | None:
    """Take labelq's request queues out of what Celery's task consumer consumes (its selection, which it reads
    again after every reconnect, is made explicit); the ones -Q named, or None when it named none (serve all)."""
    queues = app.amqp.queues
    selected = list(queues.consume_from)
    named = tuple(name for name in REQUEST_QUEUES if name in selected)
    queues.select([name for name in selected if name not in REQUEST_QUEUES] or [QUEUE_TASKS])
    return named or None


class LabelqConsumer(Consumer):
    """Celery's consumer, which hands labelq's request queues to the batching step (`labelq_step`)."""

    def __init__(self, *args: Any, app: Any = None, **kwargs: Any) -> None:
        self.labelq_queues = take_request_queues(app)  # read by BatchConsumerStep.__init__
        self.labelq_step: Any = None  # the BatchConsumerStep, set by it
        super().__init__(*args, app=app, **kwargs)

    def add_task_queue(self, queue: str, *args: Any, **kwargs: Any) -> None:
        if queue in REQUEST_QUEUES:
            self.labelq_step.serve(queue)
        else:
            super().add_task_queue(queue, *args, **kwargs)

    def cancel_task_queue(self, queue: str) -> None:
        if queue in REQUEST_QUEUES:
            self.labelq_step.pause(queue)
        else:
            super().cancel_task_queue(queue)


@inspect_command()  # type: ignore[untyped-decorator]
def active_queues(state: Any) -> list[dict[str, Any]]:
    """List the task queues a worker is currently consuming from (on a labelq worker: its batching step's too).
    Replaces Celery's command of that name, which reads the task consumer only."""
    consumer = state.consumer
    found = [dict(q.as_dict(recurse=True)) for q in consumer.task_consumer.queues] if consumer.task_consumer else []
    step = getattr(consumer, "labelq_step", None)
    if step is not None:
        found += [_queue_info(consumer.app, name) for name in step.served()]
    return found


def _queue_info(app: Any, name: str) -> dict[str, Any]:
    """A queue the batch loop claims, in kombu's `Queue.as_dict` format (what Flower's worker page reads)."""
    queue = app.amqp.queues[name] if name in app.amqp.queues else Queue(name, Exchange(name), name)
    return {**queue.as_dict(recurse=True), "labelq": "batching step"}
