"""Refitting a taught label set on its moderators' corrections (`labelq labelsets refit NAME`), so that a refit
can never make things worse.

The corrections (worker/stream/corrections.py: the newest of each request, those whose labels the set still
has) are split by a hash of the request id: a fifth is held out, never fitted on; the rest (with `--data`, the
set's own training data, when you have it) trains a candidate head, by the same fit as `labelq labelsets fit`,
from the live version's labels and texts. A refit needs 40 corrections to fit and 20 held out, and at least 3
positive rows of every label (the live head's own training data is not kept, so a label without them would be
learnt away). The candidate and the live version are scored on the held-out corrections (and on `--val` rows,
when given) as they would serve: each label's threshold, or the top label of a single-label set. The candidate
becomes the next version only if it scores at least as well as the live one on each; else it is kept apart as
the set's candidate (`labelq:labelset:<name>:candidate`, replaced by the next refit) and the refit says why.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from schemas import RequestLimits
from worker.engine.embedding import EmbeddingClassifier
from worker.engine.heads import LinearHead
from worker.errors import InputError
from worker.ops import training
from worker.stream.corrections import Corrected
from worker.stream.labelsets import LabelSet

HELD_OUT_EVERY = 5  # one correction in five (by a hash of its request id) judges the candidate
MIN_HELD_OUT = 20  # fewer held-out corrections than this are no evidence that a candidate is as good
MIN_FITTED = 40
CORRECTION_WEIGHT = 10  # a correction's weight (as copies) beside --data rows
MIN_POSITIVES = 3  # rows (corrections, --data) a label needs to be fitted at all: else it would be learnt away


class LabelSets(Protocol):
    """What a refit reads and writes: one server's `LabelSetStore`, or a fleet's (labelq/commands/labelset_fleet.py)."""

    limits: RequestLimits

    def get(self, name: str, version: int | None = None) -> LabelSet | None: ...
    def put(self, labelset: LabelSet) -> int: ...
    def put_candidate(self, labelset: LabelSet) -> None: ...


class Corrections(Protocol):
    def read(self, name: str) -> list[Corrected]: ...


def held_out(request_id: str) -> bool:
    """Whether a correction is held out of every refit of its set (stable: the same request always is)."""
    return int(hashlib.sha1(request_id.encode()).hexdigest(), 16) % HELD_OUT_EVERY == 0


@dataclass(frozen=True, slots=True)
class Refit:
    promoted: bool
    version: int | None  # the version it was stored as, when promoted
    live_version: int
    corrections: int
    held_out: int
    fitted_rows: int
    live_score: float  # macro-F1 on the held-out corrections
    candidate_score: float
    live_val: float | None = None  # on --val rows
    candidate_val: float | None = None

    @property
    def summary(self) -> str:
        val = (
            f"; validation rows {self.candidate_val:.4f} (live {self.live_val:.4f})"
            if self.live_val is not None and self.candidate_val is not None
            else ""
        )
        return (
            f"held-out corrections ({self.held_out} of {self.corrections}) macro-F1 {self.candidate_score:.4f} "
            f"(live version {self.live_version}: {self.live_score:.4f}){val}; fitted on {self.fitted_rows} rows"
        )


def refit(
    labelsets: LabelSets,
    corrections: Corrections,
    classifier: EmbeddingClassifier,
    name: str,
    extra_rows: Sequence[training.Row] = (),
    val_rows: Sequence[training.Row] = (),
    vectors: dict[str, np.ndarray] | None = None,
) -> Refit:
    """`vectors`: text -> vector already computed (bench/feedback_loop.py embeds each text once)."""
    live = labelsets.get(name)
    if live is None:
        raise InputError(f"no label set {name} (labelq labelsets list)")
    if live.head is None:
        raise InputError(f"label set {name} has no learned head to refit: teach it first (labelq labelsets fit)")
    mismatch = live.head.mismatch(classifier.card)
    if mismatch:
        raise InputError(f"label set {name}: {mismatch}; fit it again on this model first (labelq labelsets fit)")
    names = [label.name for label in live.labels]
    for what, given in (("--data", extra_rows), ("--val", val_rows)):
        unknown = sorted({label for row in given for label in row.labels} - set(names))
        if unknown:
            raise InputError(f"{what}: labels not in label set {name}: {unknown[:5]}; its labels: {names}")
    # corrections of labels the set no longer has (kept from a deleted set of that name) are left out
    items = [c for c in corrections.read(name) if set(c.labels) <= set(names)]
    judges = [training.Row(c.text, c.labels) for c in items if held_out(c.request_id)]
    rows = [training.Row(c.text, c.labels) for c in items if not held_out(c.request_id)]
    if len(judges) < MIN_HELD_OUT or len(rows) < MIN_FITTED:
        raise InputError(
            f"label set {name} holds {len(items)} usable correction(s) ({len(rows)} to fit, {len(judges)} held out): "
            f"a refit needs {MIN_FITTED} to fit and {MIN_HELD_OUT} held out (one in {HELD_OUT_EVERY}) to judge it "
            "(labelq feedback)"
        )
    positives = {label: 0 for label in names}
    for row in [*rows, *extra_rows]:
        for label in row.labels:
            positives[label] += 1
    thin = [label for label, count in positives.items() if count < MIN_POSITIVES]
    if thin:
        raise InputError(
            f"label set {name}: {thin} have fewer than {MIN_POSITIVES} positive rows among the corrections"
            f"{' and --data' if extra_rows else ''}; a refit would learn them away (the live head's own training "
            "data is not kept): correct more messages that carry them, or give the set's training rows with --data"
        )
    multi_label = live.head.multi_label
    # with the set's own training rows beside them, each correction counts CORRECTION_WEIGHT times: a few hundred
    # corrections are the new domain's only voice among thousands of rows
    weighted = [*rows * (CORRECTION_WEIGHT if extra_rows else 1), *extra_rows]
    fitted = training.fit_head(
        classifier,
        live.labels,
        weighted,
        multi_label=multi_label,
        template=live.hypothesis_template,
        vectors=vectors,
    )
    # a label the fit's validation rows held no positive of has no threshold fitted: it keeps the live one (never
    # the lowest score it could find, which would accept it on every text)
    labels = tuple(
        label.model_copy(update={"threshold": fitted.thresholds.get(label.name, label.threshold)})
        for label in live.labels
    )
    candidate = live.model_copy(update={"labels": labels, "head": fitted.head, "builtin": False, "provenance": None})
    candidate = LabelSet.model_validate(candidate.model_dump(), context=labelsets.limits)
    live_thresholds, new_thresholds = live.thresholds, candidate.thresholds
    judge_vectors = _vectors(classifier, [row.text for row in judges], vectors)
    live_score = macro_f1(live.head, live_thresholds, judge_vectors, judges, names)
    candidate_score = macro_f1(fitted.head, new_thresholds, judge_vectors, judges, names)
    live_val = candidate_val = None
    if val_rows:
        val_vectors = _vectors(classifier, [row.text for row in val_rows], vectors)
        live_val = macro_f1(live.head, live_thresholds, val_vectors, val_rows, names)
        candidate_val = macro_f1(fitted.head, new_thresholds, val_vectors, val_rows, names)
    better = candidate_score >= live_score and (live_val is None or (candidate_val or 0.0) >= live_val)
    if better:
        version: int | None = labelsets.put(candidate)
    else:
        labelsets.put_candidate(candidate)
        version = None
    return Refit(
        better,
        version,
        live.version,
        len(items),
        len(judges),
        len(rows) + len(extra_rows),
        live_score,
        candidate_score,
        live_val,
        candidate_val,
    )


def macro_f1(
    head: LinearHead, thresholds: Sequence[float], vectors: np.ndarray, rows: Sequence[training.Row], names: list[str]
) -> float:
    """Macro-F1 of a head's decisions as served: labels at or over their thresholds (multi-label), or the top
    label (single-label); over the labels in the gold rows or the decisions."""
    scores = np.asarray(head.scores(vectors))
    gold = np.array([[name in row.labels for name in names] for row in rows], dtype=bool)
    if head.multi_label:
        decided = scores >= np.asarray(thresholds)
    else:
        decided = np.zeros_like(gold)
        decided[np.arange(len(rows)), scores.argmax(axis=1)] = True
    f1s = []
    for column in range(len(names)):
        positive, predicted = gold[:, column], decided[:, column]
        if not positive.any() and not predicted.any():
            continue
        tp = int(np.sum(positive & predicted))
        f1s.append(2 * tp / (int(positive.sum()) + int(predicted.sum())))
    return float(np.mean(f1s)) if f1s else 0.0


def _vectors(classifier: EmbeddingClassifier, texts: list[str], known: dict[str, np.ndarray] | None) -> np.ndarray:
    if known is not None and all(text in known for text in texts):
        return np.stack([known[text] for text in texts])
    return training.embed_texts(classifier, texts)
