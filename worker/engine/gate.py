"""A checkpoint before each model run, so a long batch can let urgent work through between its runs.

A bulk batch is many model runs (its pairs split by `max_pairs_per_run` and the token budget). While it runs,
the worker's event loop is busy; a realtime request that arrives meanwhile would wait for the whole batch
(seconds). The worker opens the gate around a bulk batch with a callback that serves waiting realtime work;
every model run first calls `checkpoint` (and so does the pipeline before the batch, and the loops that build
and write a batch's results, every `PACE` items), so a realtime request waits at most one run. The callback's
own model runs pass the gate without calling it again (no nesting), and a failing callback is logged, never
allowed to fail the batch it interrupted.

A worker that is stopping (warm shutdown) calls `interrupt`: the next `before_run` of an open gate raises
`Interrupted` instead of running the model again, so the batch ends after the run in progress and its messages are
handed back unanswered. Only the model-run checkpoints raise it, never those inside the writing of results.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
PACE = 128  # items of per-request Python work (building, serialising results) between two checkpoints


class Interrupted(BaseException):
    """The worker is stopping: the batch in progress is abandoned before its next model run. A BaseException,
    as asyncio's CancelledError: it passes through every `except Exception` that isolates one request's failure
    (a model run that fails is retried request by request; this must not be)."""


class RunGate:
    def __init__(self) -> None:
        self._between: Callable[[], None] | None = None
        self._inside = False
        self._interrupted = False

    def interrupt(self) -> None:
        """From any thread: the batch that runs in an open gate stops before its next model run."""
        self._interrupted = True

    @contextmanager
    def open(self, between: Callable[[], None]) -> Iterator[None]:
        """Call `between` before each model run made inside this block."""
        previous, self._between = self._between, between
        try:
            yield
        finally:
            self._between = previous

    @property
    def is_open(self) -> bool:
        """A batch that may be interrupted is running (its callers may then cut their work into steps)."""
        return self._between is not None and not self._inside

    def paced(self, items: Iterable[T], every: int = PACE) -> Iterator[T]:
        """`items`, with a checkpoint before every `every`-th after the first: a loop of per-request Python work
        over a bulk batch (1,024 results of 77 labels take ~40 ms to build) lets realtime work through too."""
        for index, item in enumerate(items):
            if index and not index % every:
                self.checkpoint()
            yield item

    def before_run(self) -> None:
        """Before a model run: `Interrupted` when the worker stops (in an open gate), else a checkpoint."""
        if self._interrupted and self._between is not None and not self._inside:
            raise Interrupted("the worker is stopping")
        self.checkpoint()

    def checkpoint(self) -> None:
        between = self._between
        if between is None or self._inside:
            return
        self._inside = True
        try:
            between()
        except Exception:  # the interrupted batch goes on; its own outcome is what matters here
            log.exception("work between model runs failed; the batch continues")
        finally:
            self._inside = False
