"""What the classifiers' scores become: an `Answer`, the published result of one request (shared by every
classifier).

An `Answer` holds the fields of a `schemas.ClassificationResult` as the worker computed them: label names,
scores and thresholds aligned with the request's labels, and the ranking. The worker publishes it as JSON
without validating its own output again (validating a 77-label result cost 51 us of the 74 it took to build,
more than the engine's whole Python per text on MiniLM); `result()` validates it into the contract's model for
in-process callers (`Engine.classify`, the CLI), and the tests check that both give the same JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic_core import to_json

from schemas import SCHEMA_VERSION, ClassificationResult, ClassifyRequest, ErrorResult, Shortlist
from worker.engine.models import ModelCard

LabelColumns = tuple[tuple[str, ...], tuple[float, ...]]  # label names and effective thresholds, in label order


@dataclass(frozen=True, slots=True)
class Scored:
    """A classifier's answer for one request: scores aligned with `request.labels`."""

    scores: tuple[float, ...]
    truncated: bool
    inference_ms: float


@dataclass(frozen=True, slots=True)
class Answer:
    """One request's classification, ready to publish. `names`, `scores` and `thresholds` are aligned with
    `request.labels`; `order` ranks them (highest score first, ties in label order)."""

    request: ClassifyRequest
    names: tuple[str, ...]
    scores: tuple[float, ...]
    thresholds: tuple[float, ...]
    order: Sequence[int]
    truncated: bool
    model: str
    model_revision: str
    inference_ms: float
    batch_ms: float
    shortlist: Shortlist | None = None
    queue_ms: float | None = None  # set by the pipeline: from submitted_at to the start of the batch
    label_set: tuple[str, int] | None = None  # set by the pipeline: (name, version) the labels came from
    scorer: str = "zero-shot"  # "head": the label set's learned head scored it
    scorer_note: str | None = None  # why a label set's head did not score it

    status: ClassVar[Literal["ok"]] = "ok"

    @property
    def id(self) -> str:
        return self.request.id

    @property
    def accepted(self) -> tuple[str, ...]:
        """Labels at or over their threshold, in label order (the published result lists them by score)."""
        return tuple(n for n, s, t in zip(self.names, self.scores, self.thresholds, strict=True) if s >= t)

    @property
    def top(self) -> str:
        return self.names[self.order[0]]

    def timings(self) -> dict[str, float | None]:
        return {
            "queue_ms": None if self.queue_ms is None else round(self.queue_ms, 3),
            "inference_ms": round(self.inference_ms, 3),
            "batch_ms": round(self.batch_ms, 3),
        }

    def data(self) -> dict[str, Any]:
        """The result as JSON-ready data, keys in the model's field order (so the JSON is the model's own)."""
        names, scores, thresholds = self.names, self.scores, self.thresholds
        labels = [
            {"label": names[i], "score": scores[i], "threshold": thresholds[i], "accepted": scores[i] >= thresholds[i]}
            for i in self.order
        ]
        return {
            "schema_version": SCHEMA_VERSION,
            "status": self.status,
            "id": self.request.id,
            "labels": labels,
            "accepted": [item["label"] for item in labels if item["accepted"]],
            "top": labels[0]["label"],
            "multi_label": self.request.multi_label,
            "truncated": self.truncated,
            "model": self.model,
            "model_revision": self.model_revision,
            "label_set": self.label_set[0] if self.label_set else None,
            "label_set_version": self.label_set[1] if self.label_set else None,
            "scorer": self.scorer,
            "scorer_note": self.scorer_note,
            "shortlist": self.shortlist,
            "timings": self.timings(),
            "metadata": self.request.metadata,
        }

    def json(self) -> str:
        """What is published: the same JSON as `self.result().model_dump_json()` (pydantic's own serialiser)."""
        return to_json(self.data()).decode()

    def result(self) -> ClassificationResult:
        """The validated `ClassificationResult`."""
        return ClassificationResult.model_validate(self.data())


Answered = Answer | ErrorResult  # what a worker publishes for a request


def build_answer(
    request: ClassifyRequest,
    scored: Scored,
    card: ModelCard,
    *,
    batch_ms: float,
    text_truncated: bool = False,
    shortlist: Shortlist | None = None,
    columns: LabelColumns | None = None,
) -> Answer:
    """`columns`: the request's `label_columns`, when the caller already has them (its batch-mates' list)."""
    names, thresholds = columns or label_columns(request)
    scores = scored.scores
    order = sorted(range(len(scores)), key=scores.__getitem__, reverse=True)  # stable: ties keep label order
    return Answer(
        request,
        names,
        scores,
        thresholds,
        order,
        scored.truncated or text_truncated,
        card.name,
        card.revision,
        scored.inference_ms,
        batch_ms,
        shortlist,
    )


def label_columns(request: ClassifyRequest) -> LabelColumns:
    """The request's label names and effective thresholds, aligned with its labels."""
    return tuple(label.name for label in request.labels), request.thresholds_by_label()


def shares(total_ms: float, weights: Sequence[int]) -> list[float]:
    """Split a run's time among requests in proportion to their pairs (or texts)."""
    whole = sum(weights) or 1
    return [total_ms * w / whole for w in weights]
