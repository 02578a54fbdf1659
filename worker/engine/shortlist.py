"""The shortlist stage: an embedding model ranks a request's labels, the NLI model scores only the top k.

Cost: an NLI request runs one model pair per label; shortlisted, it runs k pairs plus one text embedding
(label vectors are cached by the embedding classifier), so a 77-label request at k = 10 runs 7.7x fewer
pairs. The ranking uses each label's plain text (description or name, no hypothesis template) and its
few-shot examples, the embedding model's best input. How often the gold label survives (recall at k) is
measured on banking77 by `bench/shortlist.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from schemas import ClassifyRequest, Shortlist

if TYPE_CHECKING:
    from worker.engine.classifier import Classifier


@dataclass(frozen=True, slots=True)
class Shortlisted:
    request: ClassifyRequest  # only the kept labels, in the request's own order
    shortlist: Shortlist | None  # None: every label is scored


def shortlist_size(request: ClassifyRequest, default_k: int) -> int:
    """k for this request, or 0 when every label is to be scored (off, or no more labels than k)."""
    k = default_k if request.shortlist is None else request.shortlist
    return k if 0 < k < len(request.labels) else 0


def unchanged(requests: Sequence[ClassifyRequest]) -> list[Shortlisted]:
    return [Shortlisted(request, None) for request in requests]


def shortlist(ranker: Classifier, requests: Sequence[ClassifyRequest], default_k: int) -> list[Shortlisted]:
    """Each request with its labels cut to the `ranker`'s top k (requests without a shortlist pass through)."""
    out = unchanged(requests)
    wanted = [(i, k) for i, request in enumerate(requests) if (k := shortlist_size(request, default_k))]
    if not wanted:
        return out
    ranking = [requests[i].model_copy(update={"hypothesis_template": None, "multi_label": False}) for i, _ in wanted]
    for (i, k), scored in zip(wanted, ranker.score(ranking), strict=True):
        request = requests[i]
        keep = sorted(np.argsort(-np.asarray(scored.scores), kind="stable")[:k].tolist())
        out[i] = Shortlisted(
            request.model_copy(update={"labels": tuple(request.labels[j] for j in keep)}),
            Shortlist(model=ranker.card.name, k=k, candidates=len(request.labels)),
        )
    return out
