"""What Celery does around a task, done for classifications by the process layer (the stream imports no Celery):
task events for Flower and `celery events`, the outcome stored in a result backend that is not the broker's Redis,
and the canvas: `link` callbacks, `link_error` errbacks, the rest of a chain, and the chord a classification is a
part of. Each is handed back to Celery's own code (signatures, `backend.mark_as_done` / `mark_as_failure`), so
a workflow behaves as it would on Celery's worker.

Runs after a batch's outcomes are written and before its messages are acked: a worker that dies in between
answers again on redelivery (at least once, as Celery's `acks_late`).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

from celery import Celery, signature, states
from celery.app.task import Context
from celery.events.event import Event
from celery.utils.time import utcoffset

from schemas import ErrorResult
from schemas.codes import exception_name
from schemas.transport import TASK_CLASSIFY
from worker.process.stats import args_repr
from worker.stream.messages import Canvas
from worker.stream.pipeline import Received
from worker.stream.publishing import Publication, payload

log = logging.getLogger(__name__)
RESULT_MAX_CHARS = 1024  # of a result shown in its task-succeeded event (Celery's resultrepr_maxsize)


def send_task_events(dispatcher: Any, events: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """Publish task events from the batch thread as one `task.multi` message (how Celery's own worker sends a
    buffer of them; Flower and `celery events` read either form).

    Not through `dispatcher.send`: under Celery's event loop that appends to a buffer the loop's thread flushes by
    publishing the list and then clearing it, unsynchronised, so an event appended from another thread in between
    was lost (a task-succeeded that never reached Flower). Publishing under the dispatcher's mutex is what its own
    `publish` and `flush` hold, so heartbeats and these never share the producer at once."""
    if not events:
        return
    built = [
        Event(
            kind,
            hostname=dispatcher.hostname,
            utcoffset=utcoffset(),
            pid=dispatcher.pid,
            clock=dispatcher.clock.forward(),
            **fields,
        )
        for kind, fields in events
    ]
    with dispatcher.mutex:
        producer = dispatcher.producer
        if producer is None:  # closed on a reconnect: the next batch uses the consumer's new dispatcher
            return
        dispatcher._publish(built, producer, "task.multi")


def error_exception(error: ErrorResult) -> Exception:
    """The exception a Celery client gets for an error result: named for its code, the ErrorResult its one
    argument (module None, as labelq writes it to the result backend)."""
    cls: type[Exception] = type(exception_name(error.code), (Exception,), {"__module__": None})
    return cls(error.model_dump(mode="json"))


class CeleryOutcomes:
    def __init__(self, app: Celery, consumer: Any, *, store_results: bool, text_chars: int = 100) -> None:
        self.app = app
        self.text_chars = text_chars  # of a request's text shown in its events' args (worker/process/stats.py)
        self._hinted: set[str] = set()  # errbacks whose (request, exc, traceback) form was explained once
        self.consumer = consumer  # Celery's consumer: its event dispatcher is replaced on every reconnect
        self.store_results = store_results  # a result backend that is not the broker's Redis: through Celery

    @property
    def dispatcher(self) -> Any:
        """The consumer's current event dispatcher, when task events are on (-E, worker_send_task_events):
        without them Celery's dispatcher sends only the worker group (heartbeats)."""
        found = getattr(self.consumer, "event_dispatcher", None)
        if found is None or not found.enabled or (found.groups and "task" not in found.groups):
            return None
        return found

    @property
    def needed(self) -> bool:
        """Whether any batch needs this at all (the common case: only a followup in a message asks for it)."""
        return self.store_results or self.dispatcher is not None

    def revoked(self, task_id: str) -> None:
        """A task revoked before it was classified (`control.revoke`): REVOKED in the result backend and a
        `task-revoked` event, as Celery's own worker does when it discards one."""
        if self.app.conf.result_backend:
            self.app.backend.mark_as_revoked(task_id, "revoked")
        dispatcher = self.dispatcher
        if dispatcher is not None:
            event = {"uuid": task_id, "terminated": False, "signum": None, "expired": False}
            send_task_events(dispatcher, [("task-revoked", event)])

    # --- events ---

    def received(self, items: Sequence[Received]) -> None:
        dispatcher = self.dispatcher
        if dispatcher is None:
            return
        events = [
            (
                "task-received",
                {
                    "uuid": item.message_id,
                    "name": TASK_CLASSIFY,
                    "args": args_repr(item, self.text_chars),
                    "kwargs": "{}",
                    "retries": 0,
                    "eta": None,
                    "expires": None,
                    "root_id": item.canvas.root_id or item.message_id,
                    "parent_id": item.canvas.parent_id,
                },
            )
            for item in items
            if item.message_id
        ]
        send_task_events(dispatcher, events)

    def started(self, items: Sequence[Received]) -> None:
        """`task-started` events; STARTED in the result backend when `task_track_started` is on (Celery's
        setting: one more write per task, so off by default, as in Celery)."""
        if self.app.conf.task_track_started and self.app.conf.result_backend:
            meta = {"pid": os.getpid(), "hostname": getattr(self.consumer, "hostname", None)}
            for item in items:
                if item.message_id:
                    self.app.backend.store_result(
                        item.message_id, meta, states.STARTED, request=self._context(item.message_id, item.canvas, item)
                    )
        dispatcher = self.dispatcher
        if dispatcher is None:
            return
        send_task_events(dispatcher, [("task-started", {"uuid": item.message_id}) for item in items if item.message_id])

    # --- after the batch's write ---

    def settled(self, publications: Sequence[Publication], started_s: float, batch: Sequence[Received]) -> None:
        """After a batch's write: each task's events (its runtime: its share of the batch's, by its pairs over the
        batch's), result backend, callbacks and errbacks."""
        runtime_s = time.monotonic() - started_s
        dispatcher = self.dispatcher
        received = {item.message_id: item for item in batch if item.message_id}
        total = sum(max(1, item.pairs) for item in batch) or 1
        events: list[tuple[str, dict[str, Any]]] = []
        for publication in publications:
            if not publication.task_id:
                continue
            item = received.get(publication.task_id)
            share = max(1, item.pairs) / total if item is not None else 1.0
            try:
                events.append(self._settle(publication, runtime_s * share, item))
            except Exception:  # a callback that cannot be sent must not hold the batch's acks back
                log.exception("the Celery followups of task %s failed", publication.task_id)
        if dispatcher is not None:
            send_task_events(dispatcher, events)

    def _settle(self, publication: Publication, runtime_s: float, item: Received | None) -> tuple[str, dict[str, Any]]:
        """Stores the outcome and sends the followups; returns the task's event."""
        task_id, canvas, outcome = publication.task_id, publication.canvas, publication.outcome
        assert task_id is not None
        request = self._context(task_id, canvas, item)
        if isinstance(outcome, ErrorResult):
            exc = error_exception(outcome)
            self._hint_errbacks(canvas)
            if self.store_results or canvas.errbacks or canvas.chord or canvas.chain:  # stores, calls errbacks,
                # fails the chord, and marks the rest of a chain failed (so a chain's result does not wait forever)
                self.app.backend.mark_as_failure(task_id, exc, None, request=request, call_errbacks=True)
            return "task-failed", {"uuid": task_id, "exception": repr(exc), "traceback": ""}
        result = json.loads(payload(outcome))
        if self.store_results or canvas.chord:  # stores, and counts the chord's part
            self.app.backend.mark_as_done(task_id, result, request=request)
        ids = {"parent_id": task_id, "root_id": canvas.root_id or task_id}
        for callback in canvas.callbacks:
            signature(callback, app=self.app).apply_async((result,), **ids)
        if canvas.chain:
            rest = [dict(link) for link in canvas.chain]
            signature(rest.pop(), app=self.app).apply_async((result,), chain=rest, **ids)
        shown = payload(outcome)
        if len(shown) > RESULT_MAX_CHARS:  # Celery's own bound on a result's repr (resultrepr_maxsize)
            shown = shown[: RESULT_MAX_CHARS - 3] + "..."
        return "task-succeeded", {"uuid": task_id, "result": shown, "runtime": runtime_s}

    def _context(self, task_id: str, canvas: Canvas, item: Received | None = None) -> Context:
        """The request Celery's backend expects, from what the message carried (with result_extended, what
        Celery stores beside the result: name, args, worker, queue)."""
        context = _context(task_id, canvas)
        if item is not None:
            request = item.parsed.request.model_dump(mode="json", exclude_defaults=True) if item.parsed else None
            context.update(
                args=[request] if request is not None else [],
                kwargs={},
                hostname=getattr(self.consumer, "hostname", None),
                retries=0,
                delivery_info={"routing_key": item.delivery.queue, "exchange": "", "priority": None},
            )
        return context

    def _hint_errbacks(self, canvas: Canvas) -> None:
        """An errback this worker cannot call in-process is sent as a task with the failed task's id, Celery's
        one-argument form; say once how to have the (request, exc, traceback) form called instead."""
        for errback in canvas.errbacks:
            name = str(dict(errback).get("task", ""))
            if name and name not in self.app.tasks and name not in self._hinted:
                self._hinted.add(name)
                log.info(
                    "errback %s is not importable in this worker: sent as a task with the failed task's id (its "
                    "one argument). For the (request, exc, traceback) form, name its module in "
                    "LABELQ_CELERY_IMPORTS",
                    name,
                )

    def adopt_imported_tasks(self) -> list[str]:
        """Tasks of the modules in LABELQ_CELERY_IMPORTS, registered on this app as well (a user's `@app.task`
        belongs to the user's app): Celery's own errback call then finds them and calls the (request, exc,
        traceback) form in this worker, as a Celery worker that knows the errback does."""
        adopted = []
        for name in self.app.conf.imports or ():
            module = importlib.import_module(name)
            for value in vars(module).values():
                if isinstance(value, Celery) and value is not self.app:
                    for task_name, task in value.tasks.items():
                        if getattr(task, "__module__", None) == name and task_name not in self.app.tasks:
                            self.app.tasks.register(task)
                            adopted.append(task_name)
        return adopted


def _context(task_id: str, canvas: Canvas) -> Context:
    """The request Celery's backend expects, from what the message carried."""
    return Context(
        id=task_id,
        task=TASK_CLASSIFY,
        root_id=canvas.root_id or task_id,
        parent_id=canvas.parent_id,
        group=canvas.group,
        group_index=canvas.group_index,
        chord=canvas.chord,
        chain=[dict(link) for link in canvas.chain],
        errbacks=list(canvas.errbacks),
        callbacks=list(canvas.callbacks),
        delivery_info={},
    )
