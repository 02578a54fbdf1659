"""When to flush a batch. A small, pure component: the consumer feeds it and asks it; it never sleeps.

A batch flushes when it holds `max_items` requests, or its `max_pairs` budget of (text, label) pairs is
reached, or its oldest request has waited `max_wait_s` since the producer enqueued it (`submitted_at`, else
since it was received). A lone request at low load therefore waits at most `max_wait_s` (minus the time it
already spent in the queue), never a fixed timer period.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    queue: str
    max_items: int
    max_pairs: int
    max_wait_s: float


@dataclass
class Batcher(Generic[T]):
    policy: BatchPolicy
    _items: list[T] = field(default_factory=list)
    _pairs: int = 0
    _oldest_s: float | None = None

    def add(self, item: T, pairs: int, enqueued_at_s: float) -> None:
        self._items.append(item)
        self._pairs += pairs
        self._oldest_s = enqueued_at_s if self._oldest_s is None else min(self._oldest_s, enqueued_at_s)

    def __len__(self) -> int:
        return len(self._items)

    def full(self) -> bool:
        return len(self._items) >= self.policy.max_items or self._pairs >= self.policy.max_pairs

    def due_in_s(self, now_s: float) -> float | None:
        """Seconds until the oldest request's wait runs out (0: now); None when empty."""
        if self._oldest_s is None:
            return None
        return max(0.0, self._oldest_s + self.policy.max_wait_s - now_s)

    def take(self) -> list[T]:
        items, self._items, self._pairs, self._oldest_s = self._items, [], 0, None
        return items
