"""Turning model outputs into label scores (pure numpy, no model needed to test it).

NLI, exactly as transformers' `zero-shot-classification` pipeline:
- single-label (and more than one label): softmax over the labels' entailment logits; scores sum to 1;
- multi-label, or a single candidate label: per label, softmax over [contradiction, entailment] logits
  (the "contradiction" logit is the last class when entailment is class 0, else class 0), entailment's share.

Embedding (bi-encoder), cosine similarity c between the text and each label's prototype:
- single-label: softmax(c / temperature) over the labels;
- multi-label: sigmoid((c - center) / scale), each label on its own.
"""

from __future__ import annotations

import numpy as np


def softmax(values: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = values - values.max(axis=axis, keepdims=True)
    exps = np.exp(shifted)
    out: np.ndarray = exps / exps.sum(axis=axis, keepdims=True)
    return out


def nli_scores(logits: np.ndarray, *, multi_label: bool, entailment_id: int, contradiction_id: int) -> np.ndarray:
    """`logits`: [labels, classes] for one request's (text, hypothesis) pairs, in label order."""
    logits = logits.astype(np.float64)
    if multi_label or logits.shape[0] == 1:
        pair = logits[:, [contradiction_id, entailment_id]]
        result: np.ndarray = softmax(pair, axis=-1)[:, 1]
        return result
    return softmax(logits[:, entailment_id], axis=0)


def cosine_scores(
    cosines: np.ndarray, *, multi_label: bool, temperature: float, center: float, scale: float
) -> np.ndarray:
    """`cosines`: [labels] for one request, or [requests, labels] for requests sharing their labels."""
    cosines = cosines.astype(np.float64)
    if multi_label or cosines.shape[-1] == 1:
        result: np.ndarray = 1.0 / (1.0 + np.exp(-(cosines - center) / scale))
        return result
    return softmax(cosines / temperature, axis=-1)
