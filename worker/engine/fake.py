"""A deterministic classifier for tests of everything around the model (queues, batching, failure paths).

Score of a label: how many of its name's words occur in the text, plus a small tie-break by label order,
turned into the same single- and multi-label semantics as the real classifiers. No model file needed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from schemas import ClassifyRequest
from worker.engine.models import ModelCard
from worker.engine.results import Scored
from worker.engine.scoring import cosine_scores

FAKE_MODEL = "fake"


class FakeClassifier:
    def __init__(self, name: str = FAKE_MODEL) -> None:
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
        for request in requests:
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
