"""The batching consumer: a Celery consumer bootstep that runs labelq's batch loop (worker/process/loop.py).

Why not celery-batches: it flushes on a fixed periodic tick (a lone message waits a full period), acks a batch
even when the batch function raises, pins celery < 5.7, and hangs after a broker reconnect (its issues #99,
#107). The batch loop flushes on size, pair budget or the oldest message's age measured from enqueue; acks each
message only after its outcome is written; and runs the model in the worker process itself (one model session
per process, scale by processes), on a thread of its own so Celery's event loop keeps answering control
commands and sending heartbeats while batches run.

This step checks that no live worker serves another model on its queues (worker/process/fleet.py: one model per
queue; before the model loads, and again under a short lock held until this worker's ready record is written),
builds the runtime (the model loads and warms up before the worker says it is ready), starts the loop,
announces readiness and sweeps expired claims on Celery's timer, and stops the loop when the worker stops:
warm (SIGTERM, `control.shutdown`): the model run in progress ends, what it answered is written and acked, the
rest is handed back to its queue at once; cold (SIGQUIT): what is held is handed back without waiting. A broker
reconnect restarts Celery's steps; the loop, on its own Redis connections, goes on.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import redis
from celery import bootsteps
from celery.bootsteps import CLOSE
from celery.worker import state as worker_state

from schemas.transport import QUEUE_WEBHOOKS, QUEUES, WORKER_KEY, WORKER_KEY_TTL_S
from worker import metrics, tracing
from worker.connections import connect
from worker.constants import SHUTDOWN_WAIT_S
from worker.errors import ConfigError
from worker.process.flags import (
    EXIT_RECYCLE,
    EXIT_USAGE,  # a refused configuration: its supervisor does not replace it
    Recycle,
)
from worker.process.fleet import ModelLock, check_one_model
from worker.process.loop import BatchLoop
from worker.process.outcomes import CeleryOutcomes
from worker.process.runtime import Runtime
from worker.process.stats import TaskStats
from worker.stream.adoption import adopt
from worker.stream.redis_queue import ReliableQueue

log = logging.getLogger(__name__)
STOP_POLL_S = 0.05  # a warm stop looks this often whether it was made cold


class BatchConsumerStep(bootsteps.StartStopStep):
    """Consumes labelq's request queues in mini-batches. The runtime (model, Redis) is built in `start`, so the
    worker is not ready before its model is loaded and warmed up."""

    requires = ("celery.worker.consumer:Connection",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.runtime: Runtime | None = None
        self.loop: BatchLoop | None = None
        self.stats: TaskStats | None = None
        self.queue: ReliableQueue
        self._timers: list[Any] = []
        self._node = ""
        self._model_lock: ModelLock | None = None  # held from the last model check to the first ready record
        # the request queues this worker claims: those `celery worker -Q` named, else all; add_consumer and
        # cancel_consumer change it (worker/process/task_consumer.py)
        self._serving = list(getattr(parent, "labelq_queues", None) or QUEUES.values())
        parent.labelq_step = self

    # --- lifecycle ---

    def start(self, c: Any) -> None:
        self._node = c.hostname
        if self.runtime is None:
            self._check_one_model(c.app.labelq_settings)  # before the model loads: a mixed fleet fails fast
            self.runtime = Runtime.start(c.app.labelq_settings)
        settings = self.runtime.settings
        if self.loop is None:  # first start (a reconnect restarts Celery's steps; the loop goes on)
            self._model_lock = ModelLock(self.runtime.publisher.client)
            self._check_one_model(settings, self._model_lock)  # again: another may have become ready meanwhile
            self.queue = ReliableQueue(
                self.runtime.publisher.client,
                settings.redis_transport_options,
                max_message_bytes=settings.max_message_bytes,
            )
            self.stats = TaskStats(c.hostname, settings.event_text_chars)
            outcomes = CeleryOutcomes(
                c.app,
                c,
                store_results=settings.celery_result_backend() is not None and not settings.results_on_broker,
                text_chars=settings.event_text_chars,
            )
            adopted = outcomes.adopt_imported_tasks()
            if adopted:
                log.info("errbacks callable in this worker (LABELQ_CELERY_IMPORTS): %s", ", ".join(sorted(adopted)))
            self.sweep()  # what a worker that died before this one left is put back now, not at the first interval
            recycle = Recycle(settings.max_tasks_per_child, settings.max_memory_per_child)
            tracing.configure()  # this process's tracing, when OTEL_* asks for it (worker/tracing.py)
            self.loop = BatchLoop(
                self.runtime,
                self.queue,
                outcomes,
                self.stats,
                self._serving,
                recycle,
                on_recycle=_stop_to_recycle,
                on_failure=_stop_on_failure,
            )
            self.loop.start()
        self._announce_when_listening(c)
        self._cancel_timers()  # a reconnect restarts the steps on a cleared timer: armed again each start
        self._timers = [
            c.timer.call_repeatedly(WORKER_KEY_TTL_S / 3, self._announce),
            c.timer.call_repeatedly(settings.unacked_restore_interval_s, self.sweep),
        ]

    def _cancel_timers(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers = []

    def served(self) -> list[str]:
        """The queues this worker claims now, realtime first."""
        if self.loop is not None:
            return self.loop.served()
        return [queue for queue in QUEUES.values() if queue in self._serving]

    def serve(self, queue: str) -> None:
        """`control.add_consumer(queue)`: claim `queue` (again), unless a live worker serves another model there."""
        if self.runtime is not None:
            try:
                check_one_model(self.runtime.publisher.client, self._node, self.runtime.settings.model, [queue])
            except ConfigError as exc:
                log.error("add_consumer %s refused: %s", queue, exc)
                return
            except redis.RedisError:
                log.warning("the model check of add_consumer %s could not read Redis; serving it", queue)
        if self.loop is None:
            self._serving = [*self._serving, queue]
        else:
            self.loop.serve(queue)
        self._announce()

    def pause(self, queue: str) -> None:
        """`control.cancel_consumer(queue)`: stop claiming `queue`; what is held of it is classified and acked."""
        if self.loop is None:
            self._serving = [name for name in self._serving if name != queue]
        else:
            self.loop.pause(queue)
        self._announce()

    def stop(self, c: Any) -> None:
        if c.blueprint.state == CLOSE:  # the worker stops (not a reconnect's restart of the steps)
            self._stop_loop()

    def shutdown(self, c: Any) -> None:
        self._stop_loop()
        self._cancel_timers()
        self._retire()

    def _stop_loop(self) -> None:
        """Warm: wait (up to SHUTDOWN_WAIT_S) for the loop to end its run, write, ack and hand back the rest.
        Cold (SIGQUIT), or a wait cut short by a second signal: hand back what is held now."""
        loop = self.loop
        if loop is None or loop.exited.is_set():
            return
        cold = worker_state.should_terminate is not None
        log.info("labelq stopping (%s): no more claims; handing back what is not answered", "cold" if cold else "warm")
        loop.stop(cold=cold)
        if cold:
            return
        deadline = time.monotonic() + SHUTDOWN_WAIT_S
        try:
            while not loop.exited.wait(STOP_POLL_S):
                if worker_state.should_terminate is not None:  # made cold meanwhile (a second SIGINT, SIGQUIT)
                    loop.hand_back()
                    return
                if time.monotonic() > deadline:
                    log.warning("the batch in progress outlived %d s; handing back what is held", SHUTDOWN_WAIT_S)
                    loop.hand_back()
                    return
        except BaseException:  # a signal that raises (WorkerTerminate) while waiting: cold
            loop.hand_back()
            raise

    # --- one model per queue ---

    def _check_one_model(self, settings: Any, lock: ModelLock | None = None) -> None:
        """Refuse to start (one line, exit 2) when a live worker serves another model on this worker's queues.
        With `lock`: taken first and kept until this worker's ready record is written (`_announce`), so a worker
        starting at the same moment checks after that record exists. Redis unreachable: the check is skipped
        (the worker's own connection retries say so)."""
        client = lock.client if lock is not None else connect(settings, socket_timeout=5)
        try:
            if lock is not None:
                lock.acquire()
            check_one_model(client, self._node, settings.model, self._serving)
        except ConfigError as exc:
            if lock is not None:
                lock.release()
            log.error("refusing to start: %s", exc)  # Celery owns stderr now: its log is where this is read
            raise SystemExit(EXIT_USAGE) from None
        except redis.RedisError as exc:
            log.warning("the one-model-per-queue check could not read Redis (%s); starting without it", exc)
        finally:
            if lock is None:
                client.close()

    # --- readiness ---

    def _announce_when_listening(self, c: Any) -> None:
        """Say this worker is ready once Celery's event loop has subscribed to control commands (kombu sends
        SUBSCRIBE on the loop's first tick): a caller that sees it ready and sends `cancel_consumer` or `revoke`
        at once is heard, not lost on a channel nobody listens to yet."""
        hub = getattr(c, "hub", None)
        if hub is None:
            self._announce()
            return
        ticks = 0

        def on_tick() -> None:
            nonlocal ticks
            ticks += 1
            if ticks >= 2:  # the tick after the one that subscribed
                hub.on_tick.discard(on_tick)
                self._announce()

        hub.on_tick.add(on_tick)

    def _announce(self) -> None:
        """Say this worker is ready (model loaded, consuming); the key expires if the process dies."""
        if self.runtime is None or not self._node:
            return
        card = self.runtime.engine.classifier().card
        served = self.served()
        info = {"model": card.name, "revision": card.revision, "pid": os.getpid(), "queues": served}
        for queue in served:
            _quietly(lambda queue=queue: metrics.QUEUE_DEPTH.labels(queue).set(self.queue.waiting(queue)))
        _quietly(self.runtime.publisher.client.set, WORKER_KEY + self._node, json.dumps(info), ex=WORKER_KEY_TTL_S)
        if self._model_lock is not None:  # the record a worker starting now will check against is written
            _quietly(self._model_lock.release)
            self._model_lock = None

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


def _stop_to_recycle() -> None:
    """Ask Celery's loop (from the batch loop's thread) for a warm shutdown whose exit code says "recycle me": the
    supervisor (worker/process/launcher.py) replaces the process at once."""
    worker_state.should_stop = EXIT_RECYCLE


def _stop_on_failure() -> None:
    """The batch loop ended on a bug: the process stops with a failure exit code (a supervisor replaces it),
    rather than answer pings while consuming nothing."""
    worker_state.should_stop = 1


def _quietly(action: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    try:
        action(*args, **kwargs)
    except (OSError, redis.RedisError):  # shutting down or Redis away: nothing to lose here
        log.debug("ignored during shutdown or reconnect", exc_info=True)
