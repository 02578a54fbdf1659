"""A candidate head in shadow (`labelq labelsets shadow NAME`): scored beside the live version on live traffic,
never published, so an operator sees how it would decide before promoting it.

For each request answered by the live version's head, the candidate's decision (its accepted labels, by its own
thresholds) is computed on the same text's vector and
- counted in `labelq_labelset_shadow_total{label_set, agreement}` (agree: the same accepted labels);
- kept for the result's TTL under `labelq:shadow:<set>:<request id>`, so a moderator's correction of that
  request says which of the two was right (`labelq_labelset_corrected_total{label_set, scorer, outcome}`,
  worker/stream/corrections.py).

Its cost is the shadowed requests' text embeddings again (one more model run a batch of them) and one write a
batch; a failure here is logged and never touches the batch's answers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

import numpy as np
import redis

from schemas.transport import KEY_PREFIX
from worker import metrics
from worker.engine.embedding import EmbeddingClassifier
from worker.engine.engine import Engine
from worker.engine.results import Answer
from worker.stream.labelsets import LabelSet

log = logging.getLogger(__name__)
SHADOW_DECISION_KEY = KEY_PREFIX + "shadow:"  # + set + ":" + request id -> the shadow's accepted labels (JSON)


def score_shadows(engine: Engine, client: redis.Redis, ttl_s: int, shadowed: Sequence[tuple[Answer, LabelSet]]) -> None:
    """The shadows' decisions for answers their live head gave: counted and kept (see the module docstring)."""
    if not shadowed:
        return
    try:
        by_model: dict[str | None, list[tuple[Answer, LabelSet]]] = {}
        for answer, shadow in shadowed:
            by_model.setdefault(answer.request.model, []).append((answer, shadow))
        pipe = client.pipeline(transaction=False)
        for model, group in by_model.items():
            classifier = engine.classifier(model)
            if not isinstance(classifier, EmbeddingClassifier):
                continue
            vectors = classifier.embed([answer.request.text for answer, _ in group])[0]
            for (answer, shadow), vector in zip(group, vectors, strict=True):
                assert shadow.head is not None
                scores = np.asarray(shadow.head.scores(vector[None, :]))[0]
                accepted = [
                    label.name
                    for label, score, t in zip(shadow.labels, scores, shadow.thresholds, strict=True)
                    if score >= t
                ]
                agreement = "agree" if set(accepted) == set(answer.accepted) else "disagree"
                metrics.LABELSET_SHADOW.labels(shadow.name, agreement).inc()
                key = f"{SHADOW_DECISION_KEY}{shadow.name}:{answer.id}"
                pipe.set(key, json.dumps({"accepted": accepted}), ex=ttl_s)
        pipe.execute()
    except Exception:  # the shadow is a look ahead: it never costs the batch its answers
        log.exception("scoring %d request(s) in shadow failed", len(shadowed))
