"""The batching consumer: a Celery consumer bootstep that takes labelq's queues itself.

Why not celery-batches: it flushes on a fixed periodic tick (a lone message waits a full period), acks a batch
even when the batch function raises, pins celery < 5.7, and hangs after a broker reconnect (its issues #99,
#107). This step flushes on size, pair budget or the oldest message's age measured from enqueue; acks each
message only after its outcome is written; and runs the model in the worker process itself (pool `solo`, one
model session per process, scale by processes).

Messages are claimed with worker/stream/redis_queue.py (pop and in-flight record in one atomic step) up to the room
left in the current batch, so a bulk backlog never holds messages a realtime batch could take. One watcher
thread per queue blocks on Redis until its queue is non-empty (BLMOVE of a list onto itself, which moves
nothing) and wakes the worker's event loop through a pipe; claiming, batching, flushing and acking all run on
the event loop, between Celery's own work.

A bulk batch runs the model many times; before each run the engine's gate asks whether realtime work is
waiting (the realtime watcher's flag, a thread-safe event: no Redis call) and, if so, that work is claimed,
classified, written and acked there and then, so a realtime request waits at most one model run, not a bulk
batch. The bulk batch's own messages are written and acked at its end as always; the realtime work it lets
through is bounded per batch (`between_runs_allowance_s`) so the visibility-timeout arithmetic still holds.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from celery import bootsteps
from celery.worker import state as worker_state

from schemas.transport import QUEUE_REALTIME, QUEUE_WEBHOOKS, QUEUES, WORKER_KEY, WORKER_KEY_TTL_S
from worker import metrics
from worker.celery_outcomes import CeleryOutcomes
from worker.connections import connect
from worker.runtime import Runtime, between_runs_allowance_s
from worker.settings import Settings
from worker.stream.adoption import adopt
from worker.stream.batcher import Batcher, BatchPolicy
from worker.stream.messages import Delivery
from worker.stream.pipeline import Received
from worker.stream.publishing import Publication
from worker.stream.redis_queue import Claimed, ReliableQueue

log = logging.getLogger(__name__)
WATCH_BLOCK_S = 1  # a watcher re-checks its stop flag at least this often
CLAIM_CHUNK = 128  # bulk messages claimed at a time (realtime work goes in between)


class QueueWatcher(threading.Thread):
    """Blocks until `key` (one of `queue`'s lists: the plain one or a priority sub-list) holds a message, then
    calls `wake` and waits until the loop has claimed."""

    def __init__(self, settings: Settings, queue: str, key: str, wake: Callable[[], None]) -> None:
        super().__init__(name=f"labelq-watch-{key!r}", daemon=True)
        self.client = connect(settings, socket_timeout=WATCH_BLOCK_S + 5)
        self.queue = queue
        self.key = key
        self.wake = wake
        self.claimed = threading.Event()
        self.pending = threading.Event()  # the queue was seen non-empty and not claimed since
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                if self.client.blmove(self.key, self.key, WATCH_BLOCK_S, "RIGHT", "RIGHT") is None:
                    continue
            except redis.RedisError:
                self.stopping.wait(0.5)  # Redis away: try again shortly
                continue
            self.claimed.clear()
            self.pending.set()
            self.wake()
            self.claimed.wait(WATCH_BLOCK_S)

    def stop(self) -> None:
        self.stopping.set()
        self.claimed.set()


class BatchConsumerStep(bootsteps.StartStopStep):
    """Consumes labelq's request queues in mini-batches. The runtime (model, Redis) is built in `start`, so the
    worker is not ready before its model is loaded and warmed up."""

    requires = ("celery.worker.consumer:Connection",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.runtime: Runtime | None = None
        self.outcomes: CeleryOutcomes
        self.batchers: dict[str, Batcher[tuple[Received, Claimed]]] = {}
        self.policies: dict[str, BatchPolicy] = {}
        self._timers: dict[str, Any] = {}
        self._heartbeat: Any = None
        self._sweeper: Any = None
        self._watchers: list[QueueWatcher] = []
        self._pipe: tuple[int, int] | None = None
        self._node = ""
        self._c: Any = None
        self._allowance_s = 0.0  # realtime work a bulk batch may let through between its runs (seconds)
        self._allowance_left_s = 0.0
        # the request queues this worker claims: those `celery worker -Q` named, else all; add_consumer and
        # cancel_consumer change it (worker/celery_consumer.py)
        self.serving = set(getattr(parent, "labelq_queues", None) or QUEUES.values())
        parent.labelq_step = self

    # --- lifecycle ---

    def start(self, c: Any) -> None:
        if self.runtime is None:
            self.runtime = Runtime.start(c.app.labelq_settings)
        self._c = c
        settings = self.runtime.settings
        self.outcomes = CeleryOutcomes(
            c.app,
            c,
            store_results=settings.celery_result_backend() is not None and not settings.results_on_broker,
        )
        self.queue = ReliableQueue(
            self.runtime.publisher.client,
            settings.redis_transport_options,
            max_message_bytes=settings.max_message_bytes,
        )
        self.policies = {p.queue: p for p in self.runtime.policies}
        self.batchers = {p.queue: Batcher(p) for p in self.runtime.policies}
        bulk = [p for p in self.runtime.policies if p.queue != QUEUE_REALTIME]
        if bulk and QUEUE_REALTIME in self.policies and settings.realtime_between_runs:
            self._allowance_s = between_runs_allowance_s(settings, self.runtime.engine.runs, bulk[0])
        self._pipe = os.pipe()
        os.set_blocking(self._pipe[0], False)
        c.hub.add_reader(self._pipe[0], self._on_wake)
        for queue in self.served():
            self._watch(queue)
        self._node = c.hostname
        self._announce()
        self._heartbeat = c.timer.call_repeatedly(WORKER_KEY_TTL_S / 3, self._announce)
        self.sweep()  # what a worker that died before this one left is put back now, not at the first interval
        self._sweeper = c.timer.call_repeatedly(settings.unacked_restore_interval_s, self.sweep)
        log.info("labelq consuming %s", ", ".join(self.served()))

    def _watch(self, queue: str) -> None:
        """One watcher per list of `queue` (kombu puts prioritised messages on sub-lists)."""
        assert self.runtime is not None
        for key in self.queue.lists(queue):
            watcher = QueueWatcher(self.runtime.settings, queue, key, self._wake)
            self._watchers.append(watcher)
            watcher.start()

    def served(self) -> list[str]:
        """The queues this worker claims now, realtime first."""
        return [queue for queue in self.policies if queue in self.serving]

    def serve(self, queue: str) -> None:
        """`control.add_consumer(queue)`: claim `queue` (again)."""
        if queue in self.serving:
            return
        self.serving.add(queue)
        if self._pipe is not None:  # started: watch it now (else `start` will)
            self._watch(queue)
            self._announce()
            self.poll()
        log.info("labelq consuming %s", ", ".join(self.served()))

    def pause(self, queue: str) -> None:
        """`control.cancel_consumer(queue)`: stop claiming `queue`; what is held of it is classified and acked."""
        if queue not in self.serving:
            return
        self.serving.discard(queue)
        for watcher in self._watchers_of(queue):
            watcher.stop()
        self._watchers = [w for w in self._watchers if w.queue != queue]
        if queue in self.batchers:
            self.flush(queue)
        if self._pipe is not None:
            self._announce()
        log.info("labelq no longer consuming %s", queue)

    def stop(self, c: Any) -> None:
        self._stop_watching(c)
        self._flush_all()  # warm shutdown: finish what is held, so it is acked, not redelivered later

    def shutdown(self, c: Any) -> None:
        self._stop_watching(c)
        self._flush_all()
        self._retire()

    def _stop_watching(self, c: Any) -> None:
        for watcher in self._watchers:
            watcher.stop()
        self._watchers = []
        for timer in (self._heartbeat, self._sweeper):
            if timer is not None:
                timer.cancel()
        self._heartbeat = self._sweeper = None
        if self._pipe is not None:
            _quietly(c.hub.remove_reader, self._pipe[0])
            for fd in self._pipe:
                _quietly(os.close, fd)
            self._pipe = None

    # --- readiness ---

    def _announce(self) -> None:
        """Say this worker is ready (model loaded, consuming); the key expires if the process dies."""
        assert self.runtime is not None
        card = self.runtime.engine.classifier().card
        served = self.served()
        info = {"model": card.name, "revision": card.revision, "pid": os.getpid(), "queues": served}
        for queue in served:
            _quietly(lambda queue=queue: metrics.QUEUE_DEPTH.labels(queue).set(self.queue.waiting(queue)))
        _quietly(self.runtime.publisher.client.set, WORKER_KEY + self._node, json.dumps(info), ex=WORKER_KEY_TTL_S)

    def _retire(self) -> None:
        if self.runtime is not None and self._node:
            _quietly(self.runtime.publisher.client.delete, WORKER_KEY + self._node)

    # --- putting back what a dead worker held ---

    def sweep(self) -> None:
        """labelq's redelivery sweep over its in-flight ledger (worker/stream/redis_queue.py): claims older than
        the visibility timeout go back on their queues, poison is dead-lettered; then what an earlier labelq left
        in kombu's shared unacked hash is adopted (worker/stream/adoption.py). Every labelq queue is swept, served
        here or not: another worker's claims come back whichever worker notices."""
        assert self.runtime is not None
        settings = self.runtime.settings
        queues = list(QUEUES.values())
        try:
            swept = self.queue.sweep(settings.visibility_timeout_s, settings.max_deliveries, queues)
            self.queue.bury(swept.poison)
            adopted = adopt(self.queue.client, self.queue, [*queues, QUEUE_WEBHOOKS], settings.visibility_timeout_s)
        except redis.RedisError:
            log.warning("the redelivery sweep failed (Redis); the next one tries again", exc_info=True)
            return
        except Exception:  # never the worker's end: the next sweep tries again
            log.exception("the redelivery sweep failed unexpectedly; the next one tries again")
            return
        if swept.restored:
            log.info("put back %d message(s) whose claim expired", swept.restored)
        for item in swept.poison:
            log.warning(
                "in-flight message %s dead-lettered by the sweep: %s",
                item.tag.decode("utf-8", "backslashreplace"),
                item.reason,
            )
        for outcome, count in (
            ("restored", swept.restored),
            ("dead_lettered", len(swept.poison)),
            ("adopted", adopted),
        ):
            if count:
                metrics.REDELIVERED.labels(outcome).inc(count)

    # --- taking messages ---

    def _wake(self) -> None:  # watcher threads
        pipe = self._pipe
        if pipe is not None:
            _quietly(os.write, pipe[1], b"!")

    def _on_wake(self, *_: Any) -> None:  # event loop
        if self._pipe is not None:
            _quietly(os.read, self._pipe[0], 4096)
        self.poll()

    def poll(self) -> None:
        """One round, realtime first: claim what waits in each queue up to the room in its batch; flush a full
        batch, arm the others' deadlines. After a flush, come back for more via the event loop, so a bulk backlog
        yields to realtime between batches instead of being drained in one go."""
        more = False
        for queue, batcher in self.batchers.items():
            self._claim(queue)
            if batcher.full():
                self.flush(queue)
                more = True
            else:
                self._schedule(queue)
        if more:
            self._c.hub.call_soon(self.poll)
        for watcher in self._watchers:  # whatever woke us (a watcher, a deadline, a flush), keep watching
            watcher.claimed.set()

    def _claim(self, queue: str) -> None:
        """Take what waits in `queue`, up to the room left in its batch. A bulk batch is claimed `CLAIM_CHUNK`
        messages at a time with realtime work let through in between (claiming and parsing 1,024 77-label
        requests takes ~85 ms on 2 cores: bench/reports/python-overhead.json)."""
        if queue not in self.serving:
            return
        watchers = self._watchers_of(queue)
        for watcher in watchers:
            watcher.pending.clear()  # set again by the watcher if its list is still non-empty after this
        interleave = self._interleaves(queue)
        if interleave and not len(self.batchers[queue]):  # a bulk batch begins: its allowance for realtime work
            self._allowance_left_s = self._allowance_s
        try:
            while room := self.policies[queue].max_items - len(self.batchers[queue]):
                claimed = self.queue.claim(queue, min(room, CLAIM_CHUNK) if interleave else room)
                self._add(queue, claimed)
                if not interleave or len(claimed) < min(room, CLAIM_CHUNK) or self.batchers[queue].full():
                    break
                self._between_bulk_runs()
        except redis.RedisError:
            log.warning("claiming from %s failed; the watcher will wake us again", queue, exc_info=True)
        except Exception:  # no message may stop the worker; what was claimed comes back after the timeout
            log.exception("claiming from %s failed unexpectedly; its messages will be delivered again", queue)
        for watcher in watchers:  # claimed: it watches again now, not after the batch this poll may go on to run
            watcher.claimed.set()

    def _watchers_of(self, queue: str) -> list[QueueWatcher]:
        return [w for w in self._watchers if w.queue == queue]

    def _interleaves(self, queue: str) -> bool:
        """Whether a batch of `queue` lets realtime work through between its steps: a bulk one, unless turned off."""
        return queue != QUEUE_REALTIME and self._allowance_s > 0

    def _between_bulk_runs(self) -> None:
        """Before each model run of a bulk batch (and between the chunks it is claimed in): realtime work that
        arrived is served now, within the batch's allowance."""
        watchers = self._watchers_of(QUEUE_REALTIME)
        # what arrived while realtime work was served is served too, before the bulk batch's next run
        while any(w.pending.is_set() for w in watchers) or len(self.batchers[QUEUE_REALTIME]):
            if self._allowance_left_s <= 0:
                metrics.BETWEEN_RUNS.labels("allowance_spent").inc()
                return
            started = time.monotonic()
            self._claim(QUEUE_REALTIME)  # releases its watcher: more realtime work is seen before the next run
            self.flush(QUEUE_REALTIME)
            spent_s = time.monotonic() - started
            self._allowance_left_s -= spent_s
            metrics.BETWEEN_RUNS.labels("served").inc()
            metrics.BETWEEN_RUNS_SECONDS.inc(spent_s)

    def _add(self, queue: str, claimed: list[Claimed]) -> None:
        """Read what a claim brought (the label sets it names in one round trip) and batch it."""
        kept = [message for message in claimed if not self._revoked(message)]
        if not kept:
            return
        now = time.time()
        deliveries = [
            Delivery(queue, m.envelope.body, m.envelope.headers, m.envelope.content_type, now, m.envelope.problem)
            for m in kept
        ]
        assert self.runtime is not None
        received = self.runtime.pipeline.receive_many(deliveries)
        self.outcomes.received(received)
        for item, message in zip(received, kept, strict=True):
            self.batchers[queue].add((item, message), item.pairs, item.enqueued_at_s)

    def _revoked(self, message: Claimed) -> bool:
        """A task this worker was told to revoke (Celery's revoked set, kept by its `revoke` control command) is
        marked REVOKED and acked, never classified."""
        task_id = message.envelope.headers.get("id")
        if not isinstance(task_id, str) or task_id not in worker_state.revoked:
            return False
        self.outcomes.revoked(task_id)
        self.queue.ack([message.tag])
        log.info("task %s was revoked: acked, not classified", task_id)
        return True

    # --- flushing ---

    def _schedule(self, queue: str) -> None:
        if queue in self._timers:
            return  # the oldest message's deadline is already armed
        due = self.batchers[queue].due_in_s(time.time())
        if due is None:
            return
        if due <= 0:
            self.flush(queue)
            return
        self._timers[queue] = self._c.timer.call_after(due, self._flush_then_poll, (queue,))

    def _flush_then_poll(self, queue: str) -> None:
        self.flush(queue)
        self.poll()  # what arrived while the batch ran

    def flush(self, queue: str) -> None:
        timer = self._timers.pop(queue, None)
        if timer is not None:
            timer.cancel()
        items = self.batchers[queue].take()
        if not items:
            return
        assert self.runtime is not None
        started_s = time.monotonic()
        batch = [received for received, _ in items]
        interleave = self._interleaves(queue)
        try:
            self.outcomes.started(batch)
            if interleave:
                with self.runtime.engine.gate.open(self._between_bulk_runs):
                    publications = self.runtime.pipeline.handle(batch)
            else:
                publications = self.runtime.pipeline.handle(batch)
            self._followups(publications, started_s)
            self.queue.ack([message.tag for _, message in items])
        except redis.RedisError:  # outcomes not (all) written: left unacked, redelivered after the timeout
            log.exception("writing a batch of %d failed; it will be delivered again", len(items))
        except Exception:  # a bug must not stop the worker, nor hold a message's batch-mates back
            log.exception("a batch of %d failed unexpectedly; answering its messages one at a time", len(items))
            self._isolate(items)

    def _followups(self, publications: list[Publication], started_s: float) -> None:
        """Celery's part after the write: events, a result backend elsewhere, callbacks, chains, chords."""
        if self.outcomes.needed or any(p.canvas.followups for p in publications):
            self.outcomes.settled(publications, started_s)

    def _isolate(self, items: list[tuple[Received, Claimed]]) -> None:
        """Each message of a failed batch handled alone: its batch-mates are answered now, and only the culprit
        is left unacked, to come back after the visibility timeout and be dead-lettered after
        LABELQ_MAX_DELIVERIES (its deliveries were counted before the batch ran)."""
        assert self.runtime is not None
        for received, message in items:
            try:
                self._followups(self.runtime.pipeline.handle([received], count=False), time.monotonic())
                self.queue.ack([message.tag])
            except Exception:
                log.exception("message %s failed alone; it will be delivered again", received.counter_id)

    def _flush_all(self) -> None:
        for queue in list(self.batchers):
            self.flush(queue)


def _quietly(action: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    try:
        action(*args, **kwargs)
    except (OSError, redis.RedisError):  # shutting down or Redis away: nothing to lose here
        log.debug("ignored during shutdown or reconnect", exc_info=True)
