"""Accuracy on labelled data: accuracy, macro-F1, confused pairs; few-shot draws; per-label threshold fitting."""

from __future__ import annotations

import json
import random
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from schemas import ClassificationResult, ClassifyRequest, Label, ParsedRequest
from worker.engine.engine import Engine
from worker.errors import InputError
from worker.stream.labelsets import LabelSet


@dataclass(frozen=True, slots=True)
class Example:
    text: str
    label: str


@dataclass(frozen=True, slots=True)
class Report:
    n: int
    accuracy: float
    macro_f1: float
    per_label_f1: dict[str, float]
    confused: list[tuple[str, str, int]]  # (gold, predicted, count), most frequent first
    scores: list[dict[str, float]] = field(repr=False)  # per example, label -> score (scored labels only)
    macro_f1_labels: tuple[str, ...] = ()  # what macro-F1 averages over: the labels in the data or predicted
    shortlist_recall: float | None = None  # with a shortlist: how often the gold label was among the kept ones
    scored_by: dict[str, int] = field(default_factory=dict)  # scorer (zero-shot, head) -> examples
    scorer_note: str | None = None  # why a label set's head did not score (the first such result's note)


def read_text_lines(path: Path) -> list[str]:
    """A labelled file's lines (UTF-8, a leading BOM allowed); `InputError` naming the line if it is not UTF-8."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputError(f"{path}:{line}: not UTF-8 (byte {raw[exc.start]:#04x}); save the file as UTF-8") from None


def read_examples(path: Path) -> list[Example]:
    """Single-label rows `{"text", "label"}`; every problem is an `InputError` naming the file and line."""
    rows = []
    for number, line in enumerate(read_text_lines(path), 1):
        if line.strip():
            try:
                data = json.loads(line)
            except ValueError as exc:
                raise InputError(f"{path}:{number}: not JSON ({exc}); each line is one object") from None
            if not isinstance(data, dict) or not {"text", "label"} <= data.keys():
                raise InputError(f"{path}:{number}: each line must be an object with 'text' and 'label'")
            if not isinstance(data["label"], str | int) or isinstance(data["label"], bool):
                raise InputError(
                    f"{path}:{number}: 'label' must be one label name (labelq eval measures single-label data)"
                )
            rows.append(Example(str(data["text"]), str(data["label"])))
    if not rows:
        raise InputError(f"{path}: no labelled rows")
    return rows


def read_label_names(path: Path) -> list[str]:
    try:
        names = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise InputError(f"{path}:{getattr(exc, 'lineno', 1)}: not JSON ({exc})") from None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise InputError(f"{path}: must hold a JSON list of label names")
    return names


def build_labels(
    names: Sequence[str],
    descriptions: dict[str, str] | None = None,
    examples: dict[str, list[str]] | None = None,
    thresholds: dict[str, float] | None = None,
) -> tuple[Label, ...]:
    descriptions, examples, thresholds = descriptions or {}, examples or {}, thresholds or {}
    return tuple(
        Label(
            name=name,
            description=descriptions.get(name),
            examples=tuple(examples.get(name, ())),
            threshold=thresholds.get(name),
        )
        for name in names
    )


def draw_shots(pool: Sequence[Example], names: Sequence[str], shots: int, seed: int) -> dict[str, list[str]]:
    """`shots` example texts per label, drawn without replacement from a labelled pool (never the test set)."""
    if shots <= 0:
        return {}
    rng = random.Random(seed)
    by_label: dict[str, list[str]] = {name: [] for name in names}
    for example in pool:
        if example.label in by_label:
            by_label[example.label].append(example.text)
    return {name: rng.sample(texts, min(shots, len(texts))) for name, texts in by_label.items()}


def evaluate(
    engine: Engine,
    data: Sequence[Example],
    labels: tuple[Label, ...],
    *,
    template: str | None = None,
    model: str | None = None,
    shortlist: int | None = None,
    chunk: int = 64,
    progress: Callable[[int], None] | None = None,
    labelset: LabelSet | None = None,
) -> Report:
    """`labelset`: evaluate a stored label set as a worker serves it (its labels, template and mode, its learned
    head when the model is the one it was fitted on); `labels` and `template` are then ignored."""
    predictions: list[str] = []
    scores: list[dict[str, float]] = []
    shortlisted = 0
    scored_by: Counter[str] = Counter()
    notes: list[str] = []
    limits = engine.settings.limits()  # the engine's own (LABELQ_MAX_LABELS, ...), not the defaults
    if labelset is not None:
        labels = labelset.labels
    for start in range(0, len(data), chunk):
        part = data[start : start + chunk]
        requests = [
            ClassifyRequest.model_validate(
                {"text": ex.text, "model": model, "shortlist": shortlist}
                | ({"label_set": labelset.name} if labelset else {"labels": labels, "hypothesis_template": template}),
                context=limits,
            )
            for ex in part
        ]
        if labelset is not None:
            requests = [labelset.apply_to(request) for request in requests]
        heads = [labelset.head] * len(requests) if labelset else None
        for outcome in engine.classify([ParsedRequest(request) for request in requests], heads):
            if not isinstance(outcome, ClassificationResult):
                raise RuntimeError(f"classification failed: {outcome.code}: {outcome.message}")
            predictions.append(outcome.top)
            scores.append({item.label: item.score for item in outcome.labels})
            shortlisted += outcome.shortlist is not None
            scored_by[outcome.scorer] += 1
            if outcome.scorer_note and not notes:
                notes.append(outcome.scorer_note)
        if progress:
            progress(len(part))
    gold = [ex.label for ex in data]
    report = score_predictions(gold, predictions, [label.name for label in labels], scores)
    report = replace(report, scored_by=dict(scored_by), scorer_note=notes[0] if notes else None)
    if not shortlisted:
        return report
    kept = sum(g in row for g, row in zip(gold, scores, strict=True)) / max(len(gold), 1)
    return replace(report, shortlist_recall=kept)


def score_predictions(
    gold: Sequence[str], predicted: Sequence[str], names: Sequence[str], scores: list[dict[str, float]] | None = None
) -> Report:
    column = {name: i for i, name in enumerate(names)}
    gold_flags = np.zeros((len(gold), len(names)), dtype=bool)
    predicted_flags = np.zeros_like(gold_flags)
    for row, (g, p) in enumerate(zip(gold, predicted, strict=True)):
        if g in column:
            gold_flags[row, column[g]] = True
        if p in column:
            predicted_flags[row, column[p]] = True
    f1, present = f1_by_label(predicted_flags, gold_flags)
    confused = Counter((g, p) for g, p in zip(gold, predicted, strict=True) if g != p)
    # over the labels present in the data or predicted, as scikit-learn's macro average: a label no example has
    # and none was given scores no 0 of its own (a sorted slice of a file would otherwise report near 0)
    over = sorted(name for name, i in column.items() if present[i])
    return Report(
        n=len(gold),
        accuracy=sum(g == p for g, p in zip(gold, predicted, strict=True)) / max(len(gold), 1),
        macro_f1=float(np.mean(f1[present])) if present.any() else 0.0,
        per_label_f1={name: float(f1[i]) for name, i in column.items()},
        macro_f1_labels=tuple(over),
        confused=[(g, p, n) for (g, p), n in confused.most_common()],
        scores=scores or [],
    )


def f1_by_label(predicted: np.ndarray, gold: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per label (column of [rows, labels] flags): its one-vs-rest F1, and whether the gold rows or the
    predictions hold it at all (what a macro average is over, as scikit-learn's; an absent label's F1 is 0)."""
    tp = (predicted & gold).sum(axis=0)
    denominator = predicted.sum(axis=0) + gold.sum(axis=0)
    present = denominator > 0
    return np.where(present, 2 * tp / np.maximum(denominator, 1), 0.0), present


def fit_thresholds(report: Report, gold: Sequence[str], names: Iterable[str]) -> dict[str, float]:
    """Per label, the score threshold that maximises that label's one-vs-rest F1 on labelled data."""
    names = list(names)
    scores = np.array([[row.get(name, 0.0) for name in names] for row in report.scores])  # not shortlisted: 0
    positive = np.array([[g == name for name in names] for g in gold], dtype=bool).reshape(len(gold), len(names))
    fitted = best_thresholds(scores.reshape(len(gold), len(names)), positive)
    # a label the data does not hold has no evidence: left out (`put --thresholds-from` keeps the set's own)
    seen = [bool(positive[:, column].any()) for column in range(len(names))]
    return {name: t for name, t, held in zip(names, fitted, seen, strict=True) if held}


NO_EVIDENCE_THRESHOLD = 1.0  # a label without positive rows: accepted at a score of 1.0 only, never its lowest


def best_thresholds(scores: np.ndarray, gold: np.ndarray) -> list[float]:
    """Per label (column of [rows, labels] scores and gold flags), the threshold that maximises its F1. A label
    with no positive rows has no such threshold (every one scores F1 0, the lowest score first: it would accept
    the label on every text): it gets NO_EVIDENCE_THRESHOLD, and callers leave it out where they can."""
    fitted = []
    for column in range(scores.shape[1]):
        values, positive = scores[:, column], gold[:, column]
        if not positive.any():
            fitted.append(NO_EVIDENCE_THRESHOLD)
            continue
        best_f1, best_threshold = -1.0, 0.5
        for threshold in np.unique(np.round(values, 4)):
            accepted = values >= threshold
            tp = int(np.sum(accepted & positive))
            denominator = int(np.sum(accepted)) + int(np.sum(positive))
            f1 = 2 * tp / denominator if denominator else 0.0
            if f1 > best_f1:
                best_f1, best_threshold = f1, float(threshold)
        fitted.append(best_threshold)
    return fitted


def draws_dict(reports: Sequence[Report]) -> dict[str, Any]:
    """Several random draws of few-shot examples, summarised: each draw's accuracy and macro-F1, their means and
    the spread of macro-F1 (two draws at least)."""
    return {
        "accuracy": [round(r.accuracy, 4) for r in reports],
        "macro_f1": [round(r.macro_f1, 4) for r in reports],
        "macro_f1_mean": round(statistics.mean(r.macro_f1 for r in reports), 4),
        "macro_f1_stdev": round(statistics.stdev(r.macro_f1 for r in reports), 4),
        "accuracy_mean": round(statistics.mean(r.accuracy for r in reports), 4),
    }


def report_dict(report: Report, top_confused: int = 10) -> dict[str, Any]:
    return {
        "n": report.n,
        "accuracy": round(report.accuracy, 4),
        "macro_f1": round(report.macro_f1, 4),
        "macro_f1_over": f"{len(report.macro_f1_labels)} of {len(report.per_label_f1)} labels (in data or predicted)",
        "macro_f1_labels": list(report.macro_f1_labels),
        **({"shortlist_recall": round(report.shortlist_recall, 4)} if report.shortlist_recall is not None else {}),
        "scored_by": report.scored_by,
        **({"scorer_note": report.scorer_note} if report.scorer_note else {}),
        "per_label_f1": {k: round(v, 4) for k, v in report.per_label_f1.items()},
        "confused": [{"gold": g, "predicted": p, "count": n} for g, p, n in report.confused[:top_confused]],
    }
