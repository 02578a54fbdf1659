"""A bounded cache of label scores: the same text against the same labels on the same model is scored once.

The key is everything the scores depend on: model name and revision, the learned head (if one scores it),
template, multi_label, and each label's name, description, hypothesis and examples, and the text. Thresholds
are not in it: they are applied after, so two requests differing only in thresholds share the scores. Least
recently used entries go first.
"""

from __future__ import annotations

import sys
from dataclasses import replace

from schemas import ClassifyRequest, Label
from worker import metrics
from worker.engine.lru import BoundedLru, IdentityMemo
from worker.engine.models import ModelCard
from worker.engine.results import Scored

CacheKey = tuple[object, ...]
ENTRY_OVERHEAD_BYTES = 400  # an entry's bookkeeping beside its text, labels and scores (key tuple, dict slot)
LABEL_SIZES_MAX = 1024  # label lists whose size is remembered; forgotten all at once when full
MEMO_MAX_BYTES = 65_536  # only lists this small are remembered: the memo holds at most ~64 MB of labels


def cache_key(card: ModelCard, request: ClassifyRequest, head: str | None = None) -> CacheKey:
    """`head`: the digest of the learned head that scores the request, if one does."""
    labels = tuple((label.name, label.description, label.hypothesis, label.examples) for label in request.labels)
    return (card.name, card.revision, head, request.hypothesis_template, request.multi_label, labels, request.text)


class ResultCache:
    """Scores by key, bounded in entries and in (estimated) bytes: a key holds the request's text and labels."""

    def __init__(self, size: int, max_bytes: int) -> None:
        self.size = size
        self.hits = 0
        self.misses = 0
        self._entries: BoundedLru[CacheKey, Scored] = BoundedLru(size, max_bytes)
        self._label_bytes: IdentityMemo[tuple[Label, ...], int] = IdentityMemo(LABEL_SIZES_MAX)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        return self._entries.bytes

    def get(self, key: CacheKey) -> Scored | None:
        found = self._entries.get(key)
        if found is None:
            self.misses += 1
            metrics.RESULT_CACHE.labels("miss").inc()
            return None
        self.hits += 1
        metrics.RESULT_CACHE.labels("hit").inc()
        return replace(found, inference_ms=0.0)  # no model time was spent on it this time

    def put(self, key: CacheKey, request: ClassifyRequest, scored: Scored) -> None:
        if self.size <= 0:
            return
        size = sys.getsizeof(request.text) + self._labels_size(request.labels) + 16 * len(scored.scores)
        self._entries.put(key, scored, size + ENTRY_OVERHEAD_BYTES)

    def _labels_size(self, labels: tuple[Label, ...]) -> int:
        known = self._label_bytes.lookup(labels)
        if known is not None:
            return known[0]
        size = sum(
            sys.getsizeof(label.name)
            + sys.getsizeof(label.description or "")
            + sys.getsizeof(label.hypothesis or "")
            + sum(sys.getsizeof(example) for example in label.examples)
            for label in labels
        )
        if size <= MEMO_MAX_BYTES:  # a large list is not kept alive by the memo (it costs its own size to measure)
            self._label_bytes.put(labels, size)
        return size
