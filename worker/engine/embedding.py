"""The bi-encoder zero-shot classifier (the embedded default, all-MiniLM-L6-v2).

The text and each label are embedded apart (mean pooling, L2-normalised) and compared by cosine. A label's
prototype is the embedding of its hypothesis text (the description when given, else the name, put into the
template when the request has one); with example texts, the prototype is the normalised sum of that vector
and the mean of the examples' vectors (few-shot without training). Label and example vectors are cached.
Cost does not grow with the number of labels once their vectors are cached.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

import numpy as np

from schemas import ClassifyRequest, Label
from worker.engine.batching import pad_run, plan_runs
from worker.engine.heads import LinearHead
from worker.engine.lru import BoundedLru, IdentityMemo
from worker.engine.models import ModelCard
from worker.engine.onnx import OnnxModel
from worker.engine.results import Scored, shares
from worker.engine.scoring import cosine_scores
from worker.engine.tokenization import TextEncoder

ENTRY_OVERHEAD_BYTES = 160  # a cache entry's bookkeeping beside its text and vector (dict slot, tuple, array header)
WARM_LISTS_MAX = 1024  # label lists remembered as all cached (`new_texts`); forgotten all at once when full
MEMO_MAX_CHARS = 65_536  # only lists this small are remembered: the memo holds at most ~64 MB of label text


def _normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    out: np.ndarray = vectors / np.maximum(norms, 1e-12)
    return out


class EmbeddingClassifier:
    def __init__(
        self,
        card: ModelCard,
        model: OnnxModel,
        *,
        token_budget: int,
        max_pairs_per_run: int,
        cache_size: int,
        cache_bytes: int,
        temperature: float,
        center: float,
        scale: float,
    ) -> None:
        self.card = card
        self.model = model
        self.encoder = TextEncoder(card, model.static_sequence_length)
        self.token_budget = token_budget
        self.max_items = max_pairs_per_run
        self.temperature, self.center, self.scale = temperature, center, scale
        self._cache: BoundedLru[str, np.ndarray] = BoundedLru(cache_size, cache_bytes)  # label and example vectors
        self._warm_lists: IdentityMemo[tuple[Label, ...], str | None] = IdentityMemo(WARM_LISTS_MAX)  # new_texts

    def embed(self, texts: Sequence[str]) -> tuple[np.ndarray, list[bool]]:
        """L2-normalised mean-pooled embeddings [texts, dim] and whether each text was truncated."""
        encoded = self.encoder.encode_texts(list(texts))
        static = self.model.static_sequence_length
        plan = plan_runs([len(e) for e in encoded], self.token_budget, self.max_items, static)
        vectors: np.ndarray | None = None
        for run in plan.runs:
            feeds = pad_run([encoded[i] for i in run], self.encoder.pad_id, static, token_types=self.card.token_types)
            hidden = self.model.run(feeds)  # [n, seq, dim]
            mask = feeds["attention_mask"][..., None].astype(np.float32)
            pooled = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1.0)
            if vectors is None:
                vectors = np.empty((len(encoded), pooled.shape[-1]), dtype=np.float32)
            vectors[list(run)] = _normalise(pooled)
        assert vectors is not None, "nothing to embed"
        return vectors, [e.truncated for e in encoded]

    def cached_vectors(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Vectors of label and example texts, computing only the ones not cached yet."""
        found: dict[str, np.ndarray] = {}
        for text in texts:
            vector = self._cache.get(text)
            if vector is not None:
                found[text] = vector
        missing = list(dict.fromkeys(t for t in texts if t not in found))
        if missing:
            vectors, _ = self.embed(missing)
            for text, vector in zip(missing, vectors, strict=True):
                found[text] = vector
                self._cache.put(text, vector, sys.getsizeof(text) + vector.nbytes + ENTRY_OVERHEAD_BYTES)
        return found

    def new_texts(self, request: ClassifyRequest) -> int:
        """How many of the request's label and example texts are not cached: the sequences embedding them will
        cost on top of the text's one. A label list found all cached is remembered (by identity: a repeated
        list is one tuple, schemas/request.py), so a stream of the same labels pays one dict lookup."""
        labels, template = request.labels, request.hypothesis_template
        if self._warm_lists.lookup(labels) == (template,):  # all cached under this template
            return 0
        texts = set(self.label_texts(request))
        missing = sum(1 for text in texts if text not in self._cache)
        if not missing and sum(map(len, texts)) <= MEMO_MAX_CHARS:  # a large list is not kept alive by the memo
            self._warm_lists.put(labels, template)
        return missing

    def label_texts(self, request: ClassifyRequest) -> list[str]:
        """What the request's prototypes are made of: each label's text, then every example."""
        texts = [self.label_text(request, label) for label in request.labels]
        return texts + [example for label in request.labels for example in label.examples]

    @staticmethod
    def label_text(request: ClassifyRequest, label: Label) -> str:
        return label.hypothesis_for(request.hypothesis_template or "{}")

    def prototypes(self, request: ClassifyRequest, vectors: dict[str, np.ndarray]) -> np.ndarray:
        rows = []
        for label in request.labels:
            vector = vectors[self.label_text(request, label)]
            if label.examples:
                vector = vector + np.mean([vectors[e] for e in label.examples], axis=0)
            rows.append(vector)
        return _normalise(np.stack(rows))

    def score_heads(self, requests: Sequence[ClassifyRequest], heads: Sequence[LinearHead]) -> list[Scored]:
        """Requests scored by their label set's learned head (aligned with `requests`): the texts' vectors, then
        one matmul per head. The engine checked that each head belongs to this model."""
        started = time.perf_counter()
        text_vectors, truncated, row = self._embed_texts(requests)
        by_head: dict[int, list[int]] = {}
        for index, head in enumerate(heads):
            by_head.setdefault(id(head), []).append(index)
        scores: list[np.ndarray] = [np.empty(0)] * len(requests)
        for indices in by_head.values():
            grouped = heads[indices[0]].scores(text_vectors[[row[requests[i].text] for i in indices]])
            for i, values in zip(indices, grouped, strict=True):
                scores[i] = values
        return self._scored(requests, scores, truncated, row, started)

    def _embed_texts(self, requests: Sequence[ClassifyRequest]) -> tuple[np.ndarray, list[bool], dict[str, int]]:
        """Each distinct text's vector, whether it was truncated, and its row."""
        texts = list(dict.fromkeys(r.text for r in requests))
        text_vectors, truncated = self.embed(texts)
        return text_vectors, truncated, {text: i for i, text in enumerate(texts)}

    def _scored(
        self,
        requests: Sequence[ClassifyRequest],
        scores: list[np.ndarray],
        truncated: list[bool],
        row: dict[str, int],
        started: float,
    ) -> list[Scored]:
        elapsed_ms = (time.perf_counter() - started) * 1000
        return [
            Scored(tuple(values.tolist()), truncated[row[request.text]], ms)
            for request, values, ms in zip(requests, scores, shares(elapsed_ms, [1] * len(requests)), strict=True)
        ]

    def score(self, requests: Sequence[ClassifyRequest]) -> list[Scored]:
        started = time.perf_counter()
        text_vectors, truncated, row = self._embed_texts(requests)
        # requests with the same labels, template and mode share one prototype matrix and one matmul; keyed by
        # the labels' strings, which hash and compare in C (the pydantic labels' own __eq__ cost 3x more), worked
        # out once per label list (a repeated list is one tuple: schemas/request.py) while the batch holds them
        groups: dict[tuple[object, ...], list[int]] = {}
        keys: dict[tuple[bool, str | None, int], tuple[object, ...]] = {}
        for index, request in enumerate(requests):
            seen = (request.multi_label, request.hypothesis_template, id(request.labels))
            key = keys.get(seen)
            if key is None:
                key = keys[seen] = (
                    request.multi_label,
                    request.hypothesis_template,
                    *((label.name, label.description, label.examples) for label in request.labels),
                )
            groups.setdefault(key, []).append(index)
        firsts = [requests[indices[0]] for indices in groups.values()]
        vectors = self.cached_vectors([text for r in firsts for text in self.label_texts(r)])
        scores: list[np.ndarray] = [np.empty(0)] * len(requests)
        for indices in groups.values():
            first = requests[indices[0]]
            cosines = text_vectors[[row[requests[i].text] for i in indices]] @ self.prototypes(first, vectors).T
            grouped = cosine_scores(
                cosines,
                multi_label=first.multi_label,
                temperature=self.temperature,
                center=self.center,
                scale=self.scale,
            )
            for i, values in zip(indices, grouped, strict=True):
                scores[i] = values
        return self._scored(requests, scores, truncated, row, started)
