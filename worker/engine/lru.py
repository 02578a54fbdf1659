"""A least-recently-used map bounded both in entries and in bytes: the engine's caches hold what requests sent
(texts, label wordings), so a few huge or many distinct requests must not grow a worker without limit."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedLru(Generic[K, V]):
    """`put` takes each entry's size in bytes (an estimate the caller makes); the oldest entries go first once
    there are more than `max_entries` or more than `max_bytes` in all. An entry larger than `max_bytes` is not
    kept at all."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[K, tuple[V, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[K]:
        return iter(self._entries)  # oldest first

    def __contains__(self, key: K) -> bool:
        return key in self._entries

    def get(self, key: K) -> V | None:
        found = self._entries.get(key)
        if found is None:
            return None
        self._entries.move_to_end(key)
        return found[0]

    def put(self, key: K, value: V, size: int) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        if self.max_entries <= 0 or size > self.max_bytes:
            return
        self._entries[key] = (value, size)
        self.bytes += size
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            _, (_, evicted) = self._entries.popitem(last=False)
            self.bytes -= evicted


class IdentityMemo(Generic[K, V]):
    """A value worked out once per object, found again by the object's identity: a stream's requests share one
    label tuple (schemas/request.py), so its facts cost one dict lookup instead of a pass over its labels. The
    object is kept alive beside its value, so its id cannot be reused while remembered; all is forgotten at
    once when `max_entries` are held. Callers remember only small objects, so the memo stays small too."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: dict[int, tuple[K, V]] = {}

    def lookup(self, key: K) -> tuple[V] | None:
        """`(value,)` when `key` itself is remembered, else None (a value may be None)."""
        found = self._entries.get(id(key))
        return (found[1],) if found is not None and found[0] is key else None

    def put(self, key: K, value: V) -> None:
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[id(key)] = (key, value)
