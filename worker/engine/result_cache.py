"""A bounded cache of label scores: the same text against the same labels on the same model is scored once.

The key is everything the scores depend on: model name and revision, template, multi_label, and each label's
name, description, hypothesis and examples, and the text. Thresholds are not in it: they are applied after,
so two requests differing only in thresholds share the scores. Least recently used entries go first.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace

from schemas import ClassifyRequest
from worker import metrics
from worker.engine.models import ModelCard
from worker.engine.results import Scored

CacheKey = tuple[object, ...]


def cache_key(card: ModelCard, request: ClassifyRequest) -> CacheKey:
    labels = tuple((label.name, label.description, label.hypothesis, label.examples) for label in request.labels)
    return (card.name, card.revision, request.hypothesis_template, request.multi_label, labels, request.text)


class ResultCache:
    def __init__(self, size: int) -> None:
        self.size = size
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[CacheKey, Scored] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: CacheKey) -> Scored | None:
        found = self._entries.get(key)
        if found is None:
            self.misses += 1
            metrics.RESULT_CACHE.labels("miss").inc()
            return None
        self.hits += 1
        metrics.RESULT_CACHE.labels("hit").inc()
        self._entries.move_to_end(key)
        return replace(found, inference_ms=0.0)  # no model time was spent on it this time

    def put(self, key: CacheKey, scored: Scored) -> None:
        if self.size <= 0:
            return
        self._entries[key] = scored
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
