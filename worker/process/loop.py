"""The batch loop: labelq's request queues claimed, batched, classified, written and acked on a thread of its own.

Why a thread: a bulk batch runs the model for seconds. Run on Celery's event loop (as it was), it kept that loop
from answering `celery inspect ping`, from sending heartbeats (Flower showed busy workers offline) and from seeing
a SIGTERM until the queue had drained. Here Celery's loop stays free; onnxruntime and the tokenizer release the
GIL while they work, so a control command is answered within milliseconds during a run.

Messages are claimed with worker/stream/redis_queue.py (pop and in-flight record in one atomic step) up to the room
left in the current batch, so a bulk backlog never holds messages a realtime batch could take. One watcher thread
per list blocks on Redis until it is non-empty (BLMOVE of a list onto itself, which moves nothing) and wakes this
loop. A batch is flushed when full (size or pair budget) or when its oldest message's wait is up.

A bulk batch runs the model many times; before each run the engine's gate asks whether realtime work is waiting
(the realtime watcher's flag: no Redis call) and, if so, that work is claimed, classified, written and acked there
and then, so a realtime request waits at most one model run, not a bulk batch. The realtime work a bulk batch lets
through is bounded per batch (`between_runs_allowance_s`) so the visibility-timeout arithmetic still holds.

Stopping (`stop`): no claim after it; the batch in progress ends after its current model run (a bulk batch is
abandoned there, `worker.engine.gate.Interrupted`; a realtime batch is one run, so it ends), what was answered is
written and acked, and every message held but not answered goes back onto its queue at once
(`ReliableQueue.release`), its abandoned delivery not counted. `stop(cold=True)` hands back what is held from the
calling thread without waiting for the run in progress.
"""

from __future__ import annotations

import logging
import queue as queues
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import redis

from schemas import ErrorResult, ParsedRequest
from schemas.transport import QUEUE_REALTIME
from worker import metrics, tracing
from worker.connections import connect
from worker.engine.gate import Interrupted
from worker.engine.results import Answer
from worker.process.flags import Recycle
from worker.process.outcomes import CeleryOutcomes
from worker.process.runtime import Runtime, between_runs_allowance_s
from worker.process.stats import TaskStats
from worker.settings import Settings
from worker.stream.batcher import Batcher, BatchPolicy
from worker.stream.messages import Delivery
from worker.stream.pipeline import Received
from worker.stream.publishing import Publication
from worker.stream.redis_queue import Claimed, ReliableQueue

if TYPE_CHECKING:
    from opentelemetry.trace import Span

log = logging.getLogger(__name__)
WATCH_BLOCK_S = 1  # a watcher re-checks its stop flag at least this often
CLAIM_CHUNK = 128  # bulk messages claimed at a time (realtime work goes in between)
IDLE_WAKE_S = 1.0  # with nothing due, the loop still looks at its commands this often

Item = tuple[Received, Claimed]


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


class BatchLoop(threading.Thread):
    def __init__(
        self,
        runtime: Runtime,
        queue: ReliableQueue,
        outcomes: CeleryOutcomes,
        stats: TaskStats,
        serving: Sequence[str],
        recycle: Recycle | None = None,
        on_recycle: Callable[[], None] | None = None,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        """`recycle`: when this process asks to be replaced (checked between batches); then it stops as on a
        warm shutdown and calls `on_recycle` (which tells Celery to stop, with the recycle exit code).
        `on_failure`: called if the loop ends on a bug (Celery is told to stop with a failure exit code)."""
        super().__init__(name="labelq-batches", daemon=True)
        self.runtime = runtime
        self.queue = queue
        self.outcomes = outcomes
        self.stats = stats
        self.recycle = recycle
        self.on_recycle = on_recycle
        self._on_failure = on_failure
        self.processed = 0
        self.policies: dict[str, BatchPolicy] = {p.queue: p for p in runtime.policies}
        self.batchers: dict[str, Batcher[Item]] = {p.queue: Batcher(p) for p in runtime.policies}
        self.serving = frozenset(serving)  # replaced, never mutated: read from Celery's thread too
        self.exited = threading.Event()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._commands: queues.SimpleQueue[Callable[[], None]] = queues.SimpleQueue()
        self._claims_failing: set[str] = set()  # queues whose last claim failed on Redis: said once an outage
        self._watchers: list[QueueWatcher] = []
        # what this worker holds (claimed, not yet acked or handed back), in claim order; the lock also keeps a
        # claim from landing after a cold stop took the list
        self._held: dict[str, None] = {}
        self._held_lock = threading.Lock()
        self.tracing = tracing.active  # None: tracing off (worker/tracing.py)
        self._spans: dict[str, Span] = {}  # tag -> its request's span, ended when acked or handed back
        self._allowance_s = 0.0  # realtime work a bulk batch may let through between its runs (seconds)
        self._allowance_left_s = 0.0
        bulk = [p for p in runtime.policies if p.queue != QUEUE_REALTIME]
        if bulk and QUEUE_REALTIME in self.policies and runtime.settings.realtime_between_runs:
            self._allowance_s = between_runs_allowance_s(runtime.settings, runtime.engine.runs, bulk[0])

    # --- what other threads call ---

    def served(self) -> list[str]:
        """The queues this worker claims now, realtime first."""
        serving = self.serving
        return [queue for queue in self.policies if queue in serving]

    def serve(self, queue: str) -> None:
        """`control.add_consumer(queue)`: claim `queue` (again)."""
        self._command(lambda: self._serve(queue))

    def pause(self, queue: str) -> None:
        """`control.cancel_consumer(queue)`: stop claiming `queue`; what is held of it is classified and acked."""
        self._command(lambda: self._pause(queue))

    def stop(self, *, cold: bool = False) -> None:
        """Stop claiming now; the loop ends its model run in progress, writes and acks what is answered and hands
        the rest back (then `exited` is set). `cold`: hand back what is held now, from this thread."""
        self._stopping.set()
        self.runtime.engine.gate.interrupt()
        for watcher in self._watchers:
            watcher.stop()
        self._wake.set()
        if cold:
            self.hand_back()

    def hand_back(self) -> int:
        """Put every held message back on its queue now (the last step of a stop)."""
        with self._held_lock:
            tags, self._held = list(self._held), {}
        released = self._release(tags)
        if released:
            log.info("handed %d held message(s) back to their queues, unanswered", released)
        return released

    def _command(self, action: Callable[[], None]) -> None:
        self._commands.put(action)
        self._wake.set()

    # --- the loop ---

    def run(self) -> None:
        try:
            for queue in self.served():
                self._watch(queue)
            log.info("labelq consuming %s", ", ".join(self.served()))
            while not self._stopping.is_set():
                self._wake.wait(self._next_due_s())
                self._wake.clear()
                self._run_commands()
                if self._stopping.is_set():
                    break
                self._flush_due()
                self.poll()
        except Exception:  # a bug here must not leave what is held unacked until the timeout
            log.exception("the batch loop failed; handing back what it holds and stopping the worker")
        finally:
            for watcher in self._watchers:
                watcher.stop()
            self.hand_back()
            self.exited.set()
            if not self._stopping.is_set() and self._on_failure is not None:
                self._on_failure()  # a worker that no longer consumes must not look alive

    def _next_due_s(self) -> float:
        dues = [due for b in self.batchers.values() if (due := b.due_in_s(time.time())) is not None]
        return max(0.0, min(dues, default=IDLE_WAKE_S))

    def _run_commands(self) -> None:
        while True:
            try:
                action = self._commands.get_nowait()
            except queues.Empty:
                return
            action()

    def _flush_due(self) -> None:
        now = time.time()
        for queue, batcher in self.batchers.items():
            due = batcher.due_in_s(now)
            if due is not None and due <= 0:
                self.flush(queue)

    def _wake_up(self) -> None:  # watcher threads
        self._wake.set()

    def _watch(self, queue: str) -> None:
        """One watcher per list of `queue` (kombu puts prioritised messages on sub-lists)."""
        for key in self.queue.lists(queue):
            watcher = QueueWatcher(self.runtime.settings, queue, key, self._wake_up)
            self._watchers.append(watcher)
            watcher.start()

    def _serve(self, queue: str) -> None:
        if queue in self.serving or queue not in self.policies:
            return
        self.serving = self.serving | {queue}
        self._watch(queue)
        log.info("labelq consuming %s", ", ".join(self.served()))

    def _pause(self, queue: str) -> None:
        if queue not in self.serving:
            return
        self.serving = self.serving - {queue}
        for watcher in self._watchers_of(queue):
            watcher.stop()
        self._watchers = [w for w in self._watchers if w.queue != queue]
        self.flush(queue)
        log.info("labelq no longer consuming %s", queue)

    def poll(self) -> None:
        """One round, realtime first: claim what waits in each queue up to the room in its batch; flush a full
        batch. After a flush, come round again, so a bulk backlog yields to realtime between batches."""
        more = False
        for queue, batcher in self.batchers.items():
            if self._stopping.is_set():
                return
            self._claim(queue)
            if batcher.full():
                self.flush(queue)
                more = True
        if more:
            self._wake.set()
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
                want = min(room, CLAIM_CHUNK) if interleave else room
                with self._held_lock:
                    if self._stopping.is_set():
                        break
                    claimed = self.queue.claim(queue, want)
                    self._held.update(dict.fromkeys(message.tag for message in claimed))
                self._add(queue, claimed)
                if not interleave or len(claimed) < want or self.batchers[queue].full():
                    break
                self._between_bulk_runs()
            if queue in self._claims_failing:
                self._claims_failing.discard(queue)
                log.info("claiming from %s works again", queue)
        except redis.RedisError as exc:  # one line an outage (a Redis down for minutes logged a traceback twice a
            # second): the traceback at DEBUG
            if queue not in self._claims_failing:
                self._claims_failing.add(queue)
                log.warning("claiming from %s failed (%s); trying again as its watcher wakes us", queue, exc)
            log.debug("claiming from %s failed", queue, exc_info=True)
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
            if self._allowance_left_s <= 0 or self._stopping.is_set():
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
            Delivery(
                queue, m.envelope.body, m.envelope.headers, m.envelope.content_type, now, m.envelope.problem, m.digest
            )
            for m in kept
        ]
        received = self.runtime.pipeline.receive_many(deliveries)
        if self.tracing is not None:
            received = self._traced(self.tracing, received, kept)
        self.outcomes.received(received)
        for item, message in zip(received, kept, strict=True):
            self.batchers[queue].add((item, message), item.pairs, item.enqueued_at_s)

    def _revoked(self, message: Claimed) -> bool:
        """A task this worker was told to revoke (Celery's revoked set, kept by its `revoke` control command) is
        marked REVOKED and acked, never classified."""
        task_id = message.envelope.headers.get("id")
        if not isinstance(task_id, str) or not self.stats.is_revoked(task_id):
            return False
        self.outcomes.revoked(task_id)
        self._ack([message.tag])
        log.info("task %s was revoked: acked, not classified", task_id)
        return True

    # --- flushing ---

    def flush(self, queue: str) -> None:
        items = self.batchers[queue].take()
        if not items:
            return
        spans = [span for _, message in items if (span := self._spans.get(message.tag)) is not None]
        if self.tracing is None or not spans:
            self._settle(queue, items)
            return
        with self.tracing.batch(queue, spans) as batch_span:
            for span in spans:
                self.tracing.link(span, batch_span)
            self._settle(queue, items)

    def _settle(self, queue: str, items: list[Item]) -> None:
        """Classify, write and ack a batch."""
        started_s = time.monotonic()
        batch = [received for received, _ in items]
        tags = [message.tag for _, message in items]
        # with nothing for Celery to do between the write and the ack (no events, backend elsewhere, callbacks or
        # chains), the ack goes in the write's own atomic step: one round trip a batch fewer
        ack_in_write = not self.outcomes.needed and not any(item.canvas.followups for item in batch)
        acked = tags if ack_in_write else []
        try:
            self.outcomes.started(batch)
            self.stats.started(batch)
            if self._interleaves(queue) or queue != QUEUE_REALTIME:  # a bulk batch may be interrupted by a stop
                with self.runtime.engine.gate.open(self._between_bulk_runs):
                    publications = self.runtime.pipeline.handle(batch, ack=acked)
            else:
                publications = self.runtime.pipeline.handle(batch, ack=acked)
            self._followups(batch, publications, started_s)
            if self._spans:
                self._describe(items, publications)
            if ack_in_write:
                self._forget(tags)
            else:
                self._ack(tags)
            self.stats.settled(batch)
            self.processed += len(batch)
            self._maybe_recycle()
        except Interrupted:  # stopping: the batch is abandoned before a model run, nothing of it written
            self.stats.abandoned(batch)
            released = self._release(tags)  # not counted as a delivery: only the sweep counts
            log.info("a batch of %d was abandoned by the stop: %d handed back to %s", len(items), released, queue)
        except redis.RedisError:  # outcomes not (all) written: left unacked, redelivered after the timeout (or
            # handed back at once if the worker stops first: still held)
            self.stats.abandoned(batch)
            log.exception("writing a batch of %d failed; it will be delivered again", len(items))
        except Exception:  # a bug must not stop the worker, nor hold a message's batch-mates back
            log.exception("a batch of %d failed unexpectedly; answering its messages one at a time", len(items))
            self._isolate(items)

    def _maybe_recycle(self) -> None:
        reason = self.recycle.reason(self.processed) if self.recycle else None
        if reason is None or self._stopping.is_set():
            return
        log.info("this worker process is recycled: %s; it stops claiming and will be replaced", reason)
        self.stop()
        if self.on_recycle is not None:
            self.on_recycle()

    def _followups(self, batch: list[Received], publications: list[Publication], started_s: float) -> None:
        """Celery's part after the write: events, a result backend elsewhere, callbacks, chains, chords."""
        if self.outcomes.needed or any(p.canvas.followups for p in publications):
            self.outcomes.settled(publications, started_s, batch)

    def _isolate(self, items: list[Item]) -> None:
        """Each message of a failed batch handled alone: its batch-mates are answered now, and only the culprit
        is left unacked, to come back after the visibility timeout and be dead-lettered after
        LABELQ_MAX_DELIVERIES (its deliveries were counted before the batch ran)."""
        for received, message in items:
            try:
                started_s = time.monotonic()
                self._followups([received], self.runtime.pipeline.handle([received], count=False), started_s)
                self._ack([message.tag])
                self.stats.settled([received])
            except Exception:  # still held: redelivered after the timeout, or handed back at a stop
                self.stats.abandoned([received])
                log.exception("message %s failed alone; it will be delivered again", received.counter_id)

    # --- what is held ---

    def _ack(self, tags: list[str]) -> None:
        self.queue.ack(tags)
        self._forget(tags)

    def _forget(self, tags: list[str]) -> None:
        """No longer this worker's to hand back: acked, or handed back."""
        with self._held_lock:
            for tag in tags:
                self._held.pop(tag, None)
                if self._spans and (span := self._spans.pop(tag, None)) is not None:
                    span.end()

    def _describe(self, items: list[Item], publications: list[Publication]) -> None:
        outcomes = {p.task_id: p.outcome for p in publications}
        for received, message in items:
            if (span := self._spans.get(message.tag)) is not None:
                _describe(span, received, outcomes.get(received.message_id))

    def _traced(self, tracing: tracing.Tracing, received: list[Received], kept: list[Claimed]) -> list[Received]:
        """Each request's span begun (as of its arrival in the queue, the child of its sender's span), its trace id
        and traceparent put into its metadata, so the result and the webhook carry them."""
        traced = []
        for item, message in zip(received, kept, strict=True):
            span = tracing.start_request(item.delivery.headers, item.enqueued_at_s, item.delivery.queue)
            self._spans[message.tag] = span
            ids = tracing.ids(span)
            if item.error is not None:
                item = replace(item, error=item.error.model_copy(update={"metadata": item.error.metadata | ids}))
            elif item.parsed is not None:
                request = item.parsed.request
                request = request.model_copy(update={"metadata": request.metadata | ids})
                item = replace(item, parsed=ParsedRequest(request, item.parsed.truncated))
            traced.append(item)
        return traced

    def _release(self, tags: list[str]) -> int:
        """Hand `tags` back (not counted as a delivery)."""
        for tag in tags:
            if self._spans and (span := self._spans.get(tag)) is not None:
                span.set_attribute("labelq.outcome", "handed_back")
        self._forget(tags)
        try:
            return self.queue.release(tags)
        except redis.RedisError:
            log.warning("handing %d message(s) back failed; the sweep restores them after the timeout", len(tags))
            return 0


def _describe(span: Span, received: Received, outcome: object) -> None:
    """A request span's attributes once its batch is settled: queue wait, outcome, label set, scorer."""
    if received.message_id:
        span.set_attribute("messaging.message.id", received.message_id)
    if isinstance(outcome, Answer):
        span.set_attribute("labelq.outcome", "ok")
        span.set_attribute("labelq.scorer", outcome.scorer)
        span.set_attribute("labelq.model", outcome.model)
        if outcome.queue_ms is not None:
            span.set_attribute("labelq.queue_wait_ms", round(outcome.queue_ms, 3))
        if outcome.label_set is not None:
            span.set_attribute("labelq.label_set", outcome.label_set[0])
            span.set_attribute("labelq.label_set_version", outcome.label_set[1])
    elif isinstance(outcome, ErrorResult):
        span.set_attribute("labelq.outcome", outcome.code.value)
    else:
        span.set_attribute("labelq.outcome", "dead_lettered")
