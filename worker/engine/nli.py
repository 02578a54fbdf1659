"""The NLI cross-encoder zero-shot classifier (the seed model and its siblings).

Many requests at once, each with its own labels and template: their (text, hypothesis) pairs are flattened,
identical pairs computed once, sorted by length and cut into runs by a padded-token budget.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from schemas import DEFAULT_TEMPLATE, ClassifyRequest
from worker import metrics
from worker.engine.batching import RunPlan, pad_run, plan_runs
from worker.engine.models import ModelCard
from worker.engine.onnx import OnnxModel
from worker.engine.results import Scored, shares
from worker.engine.scoring import nli_scores
from worker.engine.tokenization import Encoded, TextEncoder


class NliClassifier:
    def __init__(self, card: ModelCard, model: OnnxModel, *, token_budget: int, max_pairs_per_run: int) -> None:
        self.card = card
        self.model = model
        self.encoder = TextEncoder(card, model.static_sequence_length)
        self.token_budget = token_budget
        self.max_pairs_per_run = max_pairs_per_run
        self.last_plan: RunPlan | None = None  # for metrics and benchmarks

    def score(self, requests: Sequence[ClassifyRequest]) -> list[Scored]:
        pair_index: dict[tuple[str, str], int] = {}
        per_request: list[list[int]] = []
        for request in requests:
            per_request.append([pair_index.setdefault(pair, len(pair_index)) for pair in self.pairs(request)])
        encoded = self.encoder.encode_pairs(list(pair_index))
        started = time.perf_counter()
        logits = self.run_pairs(encoded)
        model_ms = (time.perf_counter() - started) * 1000
        times = shares(model_ms, [len(indices) for indices in per_request])
        return [
            Scored(
                scores=tuple(
                    float(s)
                    for s in nli_scores(
                        logits[indices],
                        multi_label=request.multi_label,
                        entailment_id=self.card.entailment_id,
                        contradiction_id=self.card.contradiction_id,
                    )
                ),
                truncated=any(encoded[i].truncated for i in indices),
                inference_ms=ms,
            )
            for request, indices, ms in zip(requests, per_request, times, strict=True)
        ]

    @staticmethod
    def pairs(request: ClassifyRequest) -> list[tuple[str, str]]:
        """The request's (premise, hypothesis) pairs, one per label, in label order."""
        template = request.hypothesis_template or DEFAULT_TEMPLATE
        return [(request.text, label.hypothesis_for(template)) for label in request.labels]

    def run_pairs(self, encoded: Sequence[Encoded]) -> np.ndarray:
        """Logits [pairs, classes] for encoded pairs, in their order."""
        static = self.model.static_sequence_length
        plan = plan_runs([len(e) for e in encoded], self.token_budget, self.max_pairs_per_run, static)
        self.last_plan = plan
        metrics.PADDING_RATIO.observe(plan.padding_ratio)
        logits: np.ndarray | None = None
        for run in plan.runs:
            out = self.model.run(
                pad_run([encoded[i] for i in run], self.encoder.pad_id, static, token_types=self.card.token_types)
            )
            if logits is None:
                logits = np.empty((len(encoded), out.shape[-1]), dtype=np.float32)
            logits[list(run)] = out
        assert logits is not None, "no pairs to run"
        return logits
