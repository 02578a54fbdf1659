"""Task events sent from labelq's batch thread reach Celery's event receiver without going through the buffer that
Celery's event loop flushes on its own thread (it publishes the buffer, then clears it, unsynchronised: an event
appended from another thread in between was lost, and a task-succeeded never reached Flower under load)."""

from __future__ import annotations

import contextlib
import socket
from types import SimpleNamespace
from typing import Any

from celery import Celery

from worker.process.outcomes import CeleryOutcomes


def test_events_from_the_batch_thread_are_published_not_left_in_the_loops_buffer(celery_app: Celery) -> None:
    seen: list[dict[str, Any]] = []
    with celery_app.connection_for_write() as out, celery_app.connection_for_read() as into:
        receiver = celery_app.events.Receiver(into, handlers={"*": seen.append})
        with receiver.consumer_context(wakeup=False) as (connection, _, _):
            with contextlib.suppress(TimeoutError, socket.timeout):  # kombu subscribes on its first poll
                connection.drain_events(timeout=0.2)
            # as Celery's worker builds it under its event loop: task events buffered, the loop told to flush them
            flushes: list[int] = []
            dispatcher = celery_app.events.Dispatcher(
                out, hostname="w@h", groups=["task"], buffer_group=["task"], on_send_buffered=lambda: flushes.append(1)
            )
            outcomes = CeleryOutcomes(celery_app, SimpleNamespace(event_dispatcher=dispatcher), store_results=False)
            for n in range(3):
                outcomes.revoked(f"task-{n}")
            assert not dispatcher._group_buffer["task"] and not flushes  # nothing left for the loop's thread
            for _ in range(20):
                if len(seen) >= 3:
                    break
                with contextlib.suppress(TimeoutError, socket.timeout):
                    connection.drain_events(timeout=0.5)
            dispatcher.close()
    assert [(e["type"], e["uuid"], e["hostname"]) for e in seen] == [
        ("task-revoked", f"task-{n}", "w@h") for n in range(3)
    ]
    assert all(e["clock"] > 0 for e in seen)
