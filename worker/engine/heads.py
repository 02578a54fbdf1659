"""A label set's learned scorer: a linear head over the embedding model's text vectors (numpy only).

`labelq labelsets fit` fits one on labelled examples (worker/ops/training.py) and stores it with the label set.
Serving it is one matmul per batch on the text vectors the embedding model computes anyway:
- single-label: softmax(v @ W.T + b) over the labels;
- multi-label: sigmoid(v @ W.T + b), each label on its own.

A head belongs to the model and revision whose vectors it was fitted on: on any other model the engine scores
zero-shot instead and says so (never silently wrong). Everything about a stored head is checked when it is
loaded (shape, finite values, size), so a bad document is a label set that cannot be used, not a crash.
"""

from __future__ import annotations

import base64
import hashlib
from functools import cached_property
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

from worker.engine.models import ModelCard
from worker.engine.scoring import softmax

MAX_HEAD_DIM = 4096  # the widest text vector a head may be fitted on
MAX_HEAD_LABELS = 1000
MAX_WEIGHT = 1e4  # a fitted weight this large is a broken fit or a forged document


class LinearHead(BaseModel):
    """Weights are stored as base64 of little-endian float32, row-major [labels, dim] (compact JSON)."""

    model_config = ConfigDict(frozen=True, extra="forbid", ignored_types=(cached_property,))

    kind: str = Field("linear", pattern="^linear$")
    model: str = Field(min_length=1, max_length=200, description="The embedding model the head was fitted on")
    model_revision: str = Field(min_length=1, max_length=200)
    labels: tuple[str, ...] = Field(min_length=1, max_length=MAX_HEAD_LABELS, description="Rows of W, in order")
    multi_label: StrictBool
    dim: int = Field(ge=1, le=MAX_HEAD_DIM)
    weights: str = Field(max_length=MAX_HEAD_LABELS * MAX_HEAD_DIM * 4 * 4 // 3 + 4)
    bias: tuple[float, ...]
    fitted: dict[str, Any] = Field(
        default_factory=dict, description="How it was made: data size and hash, validation metrics, parameters"
    )

    @model_validator(mode="after")
    def _check(self) -> LinearHead:
        if len(self.bias) != len(self.labels):
            raise ValueError(f"head has {len(self.bias)} biases for {len(self.labels)} labels")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("head labels must be unique")
        matrix = self.matrix  # decodes and checks the weights once, on load
        if not np.all(np.isfinite(matrix)) or not np.all(np.isfinite(self.bias)):
            raise ValueError("head weights or biases are not finite")
        if np.abs(matrix).max() > MAX_WEIGHT or max(abs(b) for b in self.bias) > MAX_WEIGHT:
            raise ValueError(f"head weights beyond ±{MAX_WEIGHT:g}: not a fitted head")
        return self

    @cached_property
    def matrix(self) -> np.ndarray:
        """W, [labels, dim] float32."""
        try:
            raw = base64.b64decode(self.weights, validate=True)
        except ValueError:
            raise ValueError("head weights are not base64") from None
        expected = len(self.labels) * self.dim * 4
        if len(raw) != expected:
            raise ValueError(
                f"head weights hold {len(raw)} bytes; {len(self.labels)} labels x {self.dim} need {expected}"
            )
        matrix = np.frombuffer(raw, dtype="<f4").reshape(len(self.labels), self.dim)
        matrix.setflags(write=False)
        return matrix

    @cached_property
    def offsets(self) -> np.ndarray:
        return np.asarray(self.bias, dtype=np.float32)

    @cached_property
    def digest(self) -> str:
        """Identifies the head's numbers (the result cache keys on it)."""
        return hashlib.sha256(self.weights.encode() + repr(self.bias).encode()).hexdigest()[:16]

    @classmethod
    def build(
        cls,
        card: ModelCard,
        labels: tuple[str, ...],
        weights: np.ndarray,
        bias: np.ndarray,
        *,
        multi_label: bool,
        fitted: dict[str, Any] | None = None,
    ) -> LinearHead:
        matrix = np.ascontiguousarray(weights, dtype="<f4")
        return cls(
            model=card.name,
            model_revision=card.revision,
            labels=labels,
            multi_label=multi_label,
            dim=int(matrix.shape[1]),
            weights=base64.b64encode(matrix.tobytes()).decode(),
            bias=tuple(float(b) for b in bias),
            fitted=fitted or {},
        )

    def mismatch(self, card: ModelCard) -> str | None:
        """Why this head cannot score with the model of `card` (None when it can)."""
        if card.kind != "embedding":
            return f"its head scores {self.model} vectors; this worker's model {card.name} is not an embedding model"
        if (card.name, card.revision) != (self.model, self.model_revision):
            return (
                f"its head was fitted on {self.model} revision {self.model_revision}; this worker runs {card.name} "
                f"revision {card.revision}: refit it (`labelq labelsets fit`)"
            )
        return None

    def scores(self, vectors: np.ndarray) -> np.ndarray:
        """[texts, labels] scores for L2-normalised text vectors [texts, dim]."""
        if vectors.shape[-1] != self.dim:
            raise ValueError(f"the head expects {self.dim}-dimensional vectors, the model gave {vectors.shape[-1]}")
        logits = vectors @ self.matrix.T + self.offsets
        if self.multi_label:
            out: np.ndarray = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
            return out
        return softmax(logits.astype(np.float64), axis=-1)
