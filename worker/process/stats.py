"""What Celery's own tools count and show for classifications, which never pass through Celery's task pool.

- `inspect stats` (`total`) and heartbeats (`processed`, what Flower's worker list shows) read Celery's
  `worker.state.total_count` / `all_total_count`: every settled classification is counted there.
- `inspect active` lists Celery's active requests; labelq's command of that name (below) adds the batch the
  batch loop is running, one entry per task, in Celery's `Request.info()` format.
- Task events and `inspect active` show a task's args as the request itself, its text cut to
  `LABELQ_EVENT_TEXT_CHARS` characters (0: the text is replaced by its length).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

from celery.worker import state as worker_state
from celery.worker.control import inspect_command

from schemas.transport import TASK_CLASSIFY
from worker.stream.pipeline import Received

ARGS_MAX_CHARS = 1024  # Celery's own `argsrepr` bound (resultrepr_maxsize)


def args_repr(item: Received, text_chars: int) -> str:
    """The task's args as Flower and `celery events` show them: `[<the request>]`, its text cut or redacted."""
    if item.parsed is None:
        return "[<unreadable request>]"
    request = item.parsed.request.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
    text = str(request.get("text", ""))
    if text_chars <= 0:
        request["text"] = f"<{len(text)} characters>"
    elif len(text) > text_chars:
        request["text"] = text[:text_chars] + "..."
    shown = json.dumps([request], ensure_ascii=False)
    return shown if len(shown) <= ARGS_MAX_CHARS else shown[: ARGS_MAX_CHARS - 3] + "..."


class TaskStats:
    """Counts settled classifications into Celery's worker state and keeps the batch in progress for
    `inspect active`. Called from the batch loop's thread; read from Celery's."""

    def __init__(self, hostname: str, text_chars: int) -> None:
        self.hostname = hostname
        self.text_chars = text_chars
        self._active: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def is_revoked(task_id: str) -> bool:
        return task_id in worker_state.revoked

    def started(self, batch: Sequence[Received]) -> None:
        now = time.time()
        found = {item.message_id: self._info(item, now) for item in batch if item.message_id}
        with self._lock:
            self._active.update(found)

    def settled(self, batch: Sequence[Received]) -> None:
        self._end(batch)
        worker_state.total_count.update({TASK_CLASSIFY: len(batch)})
        worker_state.all_total_count[0] += len(batch)

    def abandoned(self, batch: Sequence[Received]) -> None:
        """Handed back or left for redelivery: not processed here."""
        self._end(batch)

    def active(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._active.values())

    def _end(self, batch: Sequence[Received]) -> None:
        with self._lock:
            for item in batch:
                if item.message_id:
                    self._active.pop(item.message_id, None)

    def _info(self, item: Received, now: float) -> dict[str, Any]:
        return {
            "id": item.message_id,
            "name": TASK_CLASSIFY,
            "args": args_repr(item, self.text_chars),
            "kwargs": "{}",
            "type": TASK_CLASSIFY,
            "hostname": self.hostname,
            "time_start": now,
            "acknowledged": False,
            "delivery_info": {"routing_key": item.delivery.queue, "priority": None, "redelivered": None},
            "worker_pid": os.getpid(),
        }


@inspect_command(alias="dump_active")  # type: ignore[untyped-decorator]
def active(state: Any, safe: bool = False, **_: Any) -> list[dict[str, Any]]:
    """List of tasks currently being executed (on a labelq worker: the batch loop's too). Replaces Celery's
    command of that name, which lists its task pool's requests only."""
    found = [request.info(safe=safe) for request in state.tset(worker_state.active_requests)]
    step = getattr(state.consumer, "labelq_step", None)
    stats = getattr(step, "stats", None)
    return found + (stats.active() if stats is not None else [])
