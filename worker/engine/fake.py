"""A deterministic classifier for tests of everything around the model (queues, batching, failure paths).

Score of a label: how many of its name's words occur in the text, plus a small tie-break by label order,
turned into the same single- and multi-label semantics as the real classifiers. No model file needed.
With `run_ms`, it behaves like a model in time too: requests in runs of `run_size`, each run taking `run_ms`
and passing the engine's gate first, as a real model run does (drills of what happens between runs).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from schemas import ClassifyRequest
from worker.engine.gate import RunGate
from worker.engine.models import ModelCard
from worker.engine.results import Scored
from worker.engine.scoring import cosine_scores

FAKE_MODEL = "fake"


class FakeClassifier:
    def __init__(
        self, name: str = FAKE_MODEL, *, run_ms: float = 0.0, run_size: int = 64, gate: RunGate | None = None
    ) -> None:
        self.run_ms, self.run_size, self.gate = run_ms, max(1, run_size), gate
        self.card = ModelCard(
            name=name,
            kind="embedding",
            onnx_path=_nowhere(),
            tokenizer_path=_nowhere(),
            max_length=512,
            revision="fake-1",
        )
        self.calls: list[int] = []  # batch sizes seen, for assertions about batching

    def score(self, requests: Sequence[ClassifyRequest]) -> list[Scored]:
        self.calls.append(len(requests))
        results = []
        for index, request in enumerate(requests):
            if self.run_ms and index % self.run_size == 0:  # a run starts: the gate, then the run's time
                if self.gate is not None:
                    self.gate.before_run()
                time.sleep(self.run_ms / 1000)
            words = set(re.findall(r"\w+", request.text.lower()))
            raw = np.array(
                [
                    len(words & set(re.findall(r"\w+", label.hypothesis_text.lower()))) - 0.01 * i
                    for i, label in enumerate(request.labels)
                ]
            )
            scores = cosine_scores(raw, multi_label=request.multi_label, temperature=0.5, center=0.5, scale=0.25)
            results.append(Scored(tuple(float(s) for s in scores), truncated=False, inference_ms=0.0))
        return results


def _nowhere() -> Path:

    return Path("/dev/null")
