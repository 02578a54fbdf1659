"""The batching consumer: a Celery consumer bootstep that takes labelq's queues itself.

Why not celery-batches: it flushes on a fixed periodic tick (a lone message waits a full period), acks a batch
even when the batch function raises, pins celery < 5.7, and hangs after a broker reconnect (its issues #99,
#107). This step flushes on size, pair budget or the oldest message's age measured from enqueue; acks each
message only after its outcome is written; and runs the model in the worker process itself (pool `solo`, one
model session per process, scale by processes).

One kombu channel per queue, so each queue has its own prefetch window (a bulk backlog cannot occupy the
slots realtime messages need). Flushes run on the worker's event loop, between message deliveries.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

from celery import bootsteps
from kombu import Consumer, Message, Queue

from schemas.transport import WORKER_KEY, WORKER_KEY_TTL_S
from worker.batcher import Batcher, BatchPolicy
from worker.messages import Delivery
from worker.pipeline import Pipeline, Received
from worker.runtime import Runtime

log = logging.getLogger(__name__)


class BatchConsumerStep(bootsteps.ConsumerStep):
    """Consumes labelq's request queues in mini-batches. The runtime (model, Redis) is built in `start`, so the
    worker is not ready before its model is loaded and warmed up."""

    requires = ("celery.worker.consumer:Connection",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.runtime: Runtime | None = None
        self.batchers: dict[str, Batcher[tuple[Received, Message]]] = {}
        self._timers: dict[str, Any] = {}
        self._consumer_parent: Any = None
        self._heartbeat: Any = None
        self._channels: dict[str, Any] = {}
        self._node = ""

    def start(self, c: Any) -> None:
        if self.runtime is None:
            self.runtime = Runtime.start(c.app.labelq_settings)
        self._consumer_parent = c
        self.batchers = {policy.queue: Batcher(policy) for policy in self.runtime.policies}
        self.consumers = []
        for policy in self.runtime.policies:
            channel = c.connection.channel()
            consumer = Consumer(
                channel,
                queues=[Queue(policy.queue, routing_key=policy.queue)],
                on_message=lambda message, policy=policy: self.on_message(policy, message),
                prefetch_count=policy.max_items * self.runtime.settings.prefetch_batches,
                no_ack=False,
            )
            consumer.consume()
            self.consumers.append(consumer)
            self._channels[policy.queue] = channel
        log.info("labelq consuming %s", ", ".join(p.queue for p in self.runtime.policies))
        self._node = c.hostname
        self._announce()
        self._heartbeat = c.timer.call_repeatedly(WORKER_KEY_TTL_S / 3, self._announce)

    def _announce(self) -> None:
        """Say this worker is ready (model loaded, consuming); the key expires if the process dies."""
        assert self.runtime is not None
        card = self.runtime.engine.classifier().card
        info = {
            "model": card.name,
            "revision": card.revision,
            "pid": os.getpid(),
            "queues": [p.queue for p in self.runtime.policies],
        }
        try:
            self.runtime.publisher.client.set(WORKER_KEY + self._node, json.dumps(info), ex=WORKER_KEY_TTL_S)
        except Exception:  # Redis is away; the next beat tries again
            log.warning("could not announce the worker", exc_info=True)

    def _retire(self) -> None:
        if self.runtime is not None and self._node:
            _quietly(self.runtime.publisher.client.delete, WORKER_KEY + self._node)

    def stop(self, c: Any) -> None:
        self._flush_all()  # warm shutdown: finish what is buffered, so it is acked, not redelivered later
        self._stop_heartbeat()
        super().stop(c)

    def shutdown(self, c: Any) -> None:
        self._cancel_timers()
        self._stop_heartbeat()
        self._retire()
        super().shutdown(c)

    def _stop_heartbeat(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None

    @property
    def pipeline(self) -> Pipeline:
        assert self.runtime is not None
        return self.runtime.pipeline

    def on_message(self, policy: BatchPolicy, message: Message) -> None:
        self._add(policy, message)
        self._top_up(policy)
        if self.batchers[policy.queue].full():
            self.flush(policy.queue)
        else:
            self._schedule(policy.queue)

    def _top_up(self, policy: BatchPolicy) -> None:
        """Take what is already waiting in the queue, up to a full batch, in one go.

        kombu's Redis transport delivers one message per BRPOP round of the event loop; under load that would
        cut batches short. basic_get pops the waiting ones at once (each still tracked as unacked)."""
        channel = self._channels[policy.queue]
        batcher = self.batchers[policy.queue]
        while not batcher.full():
            message = channel.basic_get(policy.queue, no_ack=False)
            if message is None:
                return
            self._add(policy, message)

    def _add(self, policy: BatchPolicy, message: Message) -> None:
        delivery = Delivery(
            queue=policy.queue,
            body=message.body if isinstance(message.body, bytes) else str(message.body).encode(),
            headers=message.headers or {},
            content_type=message.content_type,
            received_at=time.time(),
            handle=message,
        )
        received = self.pipeline.receive(delivery)
        self.batchers[policy.queue].add((received, message), received.pairs, received.enqueued_at_s)

    def _schedule(self, queue: str) -> None:
        if queue in self._timers:
            return  # the oldest message's deadline is already armed
        due = self.batchers[queue].due_in_s(time.time())
        if due is None:
            return
        if due <= 0:
            self.flush(queue)
            return
        self._timers[queue] = self._consumer_parent.timer.call_after(due, self.flush, (queue,))

    def _cancel_timers(self) -> None:
        for entry in self._timers.values():
            entry.cancel()
        self._timers.clear()

    def flush(self, queue: str) -> None:
        timer = self._timers.pop(queue, None)
        if timer is not None:
            timer.cancel()
        items = self.batchers[queue].take()
        if not items:
            return
        try:
            self.pipeline.handle([received for received, _ in items])
        except Exception:  # Redis failed while publishing: give every message back, nothing is lost
            log.exception("publishing a batch of %d failed; requeueing it", len(items))
            for _, message in items:
                _quietly(message.reject, requeue=True)
            return
        for _, message in items:
            _quietly(message.ack)

    def _flush_all(self) -> None:
        for queue in list(self.batchers):
            self.flush(queue)


def _quietly(action: Any, *args: Any, **kwargs: Any) -> None:
    try:
        action(*args, **kwargs)
    except Exception:  # the connection is gone: the message is redelivered after the visibility timeout
        log.warning("could not settle a message; it will be redelivered", exc_info=True)
