"""The engine's bounded cache map."""

from __future__ import annotations

from worker.engine.lru import BoundedLru


def test_a_bounded_lru_drops_the_oldest_by_count_and_by_bytes() -> None:
    cache: BoundedLru[str, int] = BoundedLru(max_entries=3, max_bytes=100)
    for key in "abc":
        cache.put(key, 1, 10)
    assert cache.get("a") == 1  # a is now the newest
    cache.put("d", 1, 10)
    assert list(cache) == ["c", "a", "d"] and cache.bytes == 30
    cache.put("e", 1, 90)  # 120 bytes: the oldest go until it fits
    assert list(cache) == ["d", "e"] and cache.bytes == 100
    cache.put("huge", 1, 101)  # larger than the whole bound: not kept
    assert "huge" not in cache and list(cache) == ["d", "e"]
    cache.put("e", 2, 5)  # replacing an entry replaces its size
    assert cache.bytes == 15 and cache.get("e") == 2
