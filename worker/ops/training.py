"""Fitting a label set's head on labelled examples (`labelq labelsets fit`).

The texts are embedded by the worker's own embedding model (the vectors the head will see when it serves), and
a logistic regression is fitted on them with scikit-learn (the optional `fit` extra; serving needs numpy only):
multinomial for single-label sets, one per label (one-vs-rest) for multi-label ones.

The zero-shot scorer is the prior, twice over:
- each label's own text (its description, hypothesis or name) is a training example of that label, worth
  `PRIOR_WEIGHT` rows, so a label with few examples still points where its description does;
- the zero-shot logits are linear in the text vector too (cosine / temperature), so a head can add a share of
  them to its own and stay one matrix. How much (none, some, or zero-shot alone) and the regularisation are
  chosen on validation rows, which is why a head fitted on a handful of examples does not do worse there than
  zero-shot with descriptions.

Validation rows are the `--val` file; else, with 2,000 rows or more, a stratified fifth of the data held apart;
else 5-fold cross-validation. The candidates (zero-shot alone, prototypes, logistic regression) are scored on
them, a more complex kind chosen only when it does strictly better; the final head is fitted on all the data
(the held-apart rows included). Per-label thresholds are fitted on the validation rows too, and their metrics
are stored with the head. A label with no positive validation rows has no threshold fitted (`Fitted.thresholds`
leaves it out: the F1-best threshold of a label never seen would be its lowest score, accepting it on every
text); the caller keeps the one it had.
"""

from __future__ import annotations

import hashlib
import json
import random
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from schemas import Label
from worker.engine.embedding import EmbeddingClassifier
from worker.engine.heads import MAX_HEAD_LABELS, LinearHead
from worker.engine.scoring import softmax
from worker.errors import InputError
from worker.ops.evaluation import best_thresholds, f1_by_label, read_text_lines

C_GRID = (1.0, 4.0, 16.0)  # inverse regularisation strengths tried (chosen on validation rows)
PRIOR_WEIGHT = 4.0  # each label's own text counts as this many examples of it
ZERO_SHOT_SHARES = (4.0, 2.0, 1.0, 0.5, 0.0)  # how much of the zero-shot logits a head adds to its own
HELD_APART = 0.2  # without --val, with CV_MAX_ROWS rows or more: this share of each label's rows validates
CV_MAX_ROWS = 2000  # below this many rows (and without --val), the choices are cross-validated
CV_FOLDS = 5
EMBED_CHUNK = 256
MAX_ITER = 2000
CONSTANT_LOGIT = 3.0  # a multi-label head's label whose rows are all positive (or all negative): sigmoid 0.95 (0.05)


@dataclass(frozen=True, slots=True)
class Row:
    text: str
    labels: tuple[str, ...]  # one for a single-label row


@dataclass(frozen=True, slots=True)
class Fitted:
    head: LinearHead
    thresholds: dict[str, float]  # fitted on validation rows: only the labels that have positive ones there
    metrics: dict[str, Any]


def require_fitting() -> None:
    """scikit-learn is an optional extra: without it, one line that says how to install it."""
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise InputError("`labelq labelsets fit` needs the fit extra: pip install 'labelq[fit]'") from None


def read_rows(path: Path) -> tuple[list[Row], bool]:
    """Labelled rows from JSON lines `{"text": ..., "label": "name"}` (or `"label": [names]` for multi-label
    data) and whether the data is multi-label. Every problem is an `InputError` naming file and line."""
    rows: list[Row] = []
    multi = False
    for number, line in enumerate(read_text_lines(path), 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError as exc:
            raise InputError(f"{path}:{number}: not JSON ({exc}); each line is one object") from None
        label = data.get("label") if isinstance(data, dict) else None
        if not isinstance(data, dict) or not isinstance(data.get("text"), str) or not data["text"].strip():
            raise InputError(f"{path}:{number}: each line must be an object with a non-empty 'text' and a 'label'")
        if isinstance(label, list) and all(isinstance(name, str) for name in label):
            multi = True
            rows.append(Row(data["text"], tuple(dict.fromkeys(label))))
        elif isinstance(label, str | int) and not isinstance(label, bool):
            rows.append(Row(data["text"], (str(label),)))
        else:
            raise InputError(f"{path}:{number}: 'label' must be a label name (or a list of names for multi-label)")
    if not rows:
        raise InputError(f"{path}: no labelled rows")
    return rows, multi


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def embed_texts(
    classifier: EmbeddingClassifier, texts: Sequence[str], progress: Callable[[int], None] | None = None
) -> np.ndarray:
    """The texts' vectors as the worker computes them when it serves (normalised, the model's truncation)."""
    parts = []
    for start in range(0, len(texts), EMBED_CHUNK):
        chunk = list(texts[start : start + EMBED_CHUNK])
        parts.append(classifier.embed(chunk)[0])
        if progress:
            progress(len(chunk))
    return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)


def folds(rows: Sequence[Row], val_rows: Sequence[Row], seed: int) -> tuple[list[tuple[list[Row], list[Row]]], str]:
    """How the choices are validated: [(fit on, check on)] and a description. The --val file when given; else,
    with enough rows, a stratified `HELD_APART` share of each label's rows; with few, `CV_FOLDS`-fold
    cross-validation, so every row is checked once (a single small held-apart part is too noisy to choose on)."""
    if val_rows:
        return [(list(rows), list(val_rows))], "the --val file"
    rng = random.Random(seed)
    by_label: dict[str, list[int]] = {}
    for index, row in enumerate(rows):
        by_label.setdefault(row.labels[0] if row.labels else "", []).append(index)  # multi-label: [] is "none"
    fold_of: dict[int, int] = {}
    count = 1 if len(rows) >= CV_MAX_ROWS else CV_FOLDS
    dealt = 0
    for indices in by_label.values():
        shuffled = rng.sample(indices, len(indices))
        if count == 1:  # each label's rows beyond its first: a share is held apart
            for index in shuffled[: round(len(indices) * HELD_APART) if len(indices) >= 2 else 0]:
                fold_of[index] = 0
            continue
        for index in shuffled:  # dealt round-robin across labels, so small labels spread over the folds
            fold_of[index] = dealt % count
            dealt += 1
    splits = [
        (
            [r for i, r in enumerate(rows) if fold_of.get(i) != fold],
            [r for i, r in enumerate(rows) if fold_of.get(i) == fold],
        )
        for fold in range(count)
    ]
    splits = [(fit, check) for fit, check in splits if check]
    if not splits:  # one row per label: nothing can be held apart
        return [(list(rows), list(rows))], "the training rows (too few to hold any apart)"
    return splits, "held apart" if count == 1 else f"{count}-fold cross-validation"


@dataclass(frozen=True, slots=True)
class ZeroShot:
    """The zero-shot scorer as a linear map of the text vector: logits = X @ W.T + b."""

    weights: np.ndarray
    bias: np.ndarray

    def logits(self, vectors: np.ndarray) -> np.ndarray:
        out: np.ndarray = vectors @ self.weights.T + self.bias
        return out


def zero_shot(classifier: EmbeddingClassifier, prototypes: np.ndarray, multi_label: bool) -> ZeroShot:
    """What the classifier computes zero-shot (worker/engine/scoring.py), as weights: single-label softmax of
    cosine / temperature; multi-label sigmoid of (cosine - center) / scale."""
    if multi_label:
        bias = np.full(len(prototypes), -classifier.center / classifier.scale)
        return ZeroShot(prototypes / classifier.scale, bias)
    return ZeroShot(prototypes / classifier.temperature, np.zeros(len(prototypes)))


def check_data_labels(names: Sequence[str], rows: Sequence[Row]) -> None:
    """Every label the rows name is one of the set's (`InputError` naming the others otherwise)."""
    unknown = sorted({name for row in rows for name in row.labels} - set(names))
    if unknown:
        raise InputError(f"labels in the data but not in the label set: {unknown[:5]}")


def fit_head(
    classifier: EmbeddingClassifier,
    labels: Sequence[Label],
    rows: Sequence[Row],
    *,
    multi_label: bool,
    template: str | None = None,
    val_rows: Sequence[Row] = (),
    seed: int = 0,
    data_sha256: str | None = None,
    progress: Callable[[int], None] | None = None,
    vectors: dict[str, np.ndarray] | None = None,
) -> Fitted:
    """A head for `labels` from `rows` (and validation rows: given, or held apart). `vectors`: text -> vector
    already computed (the learning-curve benchmark embeds each text once); the rest are embedded here."""
    names = [label.name for label in labels]
    if len(names) < 2 and not multi_label:
        raise InputError("a single-label head needs two labels at least (one label is a yes/no: make it multi-label)")
    if len(names) > MAX_HEAD_LABELS:
        raise InputError(f"a head holds at most {MAX_HEAD_LABELS} labels; this set has {len(names)}")
    check_data_labels(names, [*rows, *val_rows])
    splits, validation = folds(rows, val_rows, seed)
    texts = list(dict.fromkeys([r.text for r in rows] + [r.text for r in val_rows]))
    known = vectors or {}
    missing = [t for t in texts if t not in known]
    embedded = dict(zip(missing, embed_texts(classifier, missing, progress), strict=True)) if missing else {}
    table = {**known, **embedded}
    prototypes = classifier.embed([label.hypothesis_for(template or "{}") for label in labels])[0]
    prior = zero_shot(classifier, prototypes.astype(np.float64), multi_label)
    checked = [row for _, check in splits for row in check]  # every validating row, once per split
    gold = _indicator(checked, names)
    prior_logits = prior.logits(_matrix(checked, table))

    # Candidates in order of preference, each scored on the validating rows: zero-shot alone, prototypes (each
    # label's text plus the mean of its examples, as a request's few-shot examples are used), then logistic
    # regression with a share of the zero-shot logits. A later one must do strictly better: on few rows a draw
    # is no evidence, and the stronger prior wins it.
    def prototype_logits(fit: Sequence[Row], check: Sequence[Row]) -> np.ndarray:
        return zero_shot(classifier, _prototypes(fit, table, prototypes, names), multi_label).logits(
            _matrix(check, table)
        )

    candidates: list[tuple[Method, np.ndarray]] = [(Method("zero-shot"), prior_logits)]
    candidates.append((Method("prototypes"), np.vstack([prototype_logits(fit, check) for fit, check in splits])))
    for c in C_GRID:
        own = np.vstack([_fitted_logits(fit, check, table, prototypes, names, c, multi_label) for fit, check in splits])
        candidates += [
            (Method("logistic regression", c, share), own + share * prior_logits) for share in ZERO_SHOT_SHARES
        ]
    best: tuple[float, Method, np.ndarray] | None = None
    zero_shot_quality = 0.0
    for method, logits in candidates:
        scores = _scores(logits, multi_label)
        quality = _macro_f1(scores, gold, multi_label)
        if method.kind == "zero-shot":
            zero_shot_quality = quality
        if best is None or quality > best[0] + 1e-9:
            best = (quality, method, scores)
    assert best is not None
    quality, method, check_scores = best
    # the validating rows are data too: the final head is made from all of them
    if method.kind == "zero-shot":
        weights, bias = prior.weights, prior.bias
    elif method.kind == "prototypes":
        final = zero_shot(classifier, _prototypes(rows, table, prototypes, names), multi_label)
        weights, bias = final.weights, final.bias
    else:
        weights, bias = _fit(rows, table, prototypes, names, method.c, multi_label)
        weights, bias = weights + method.share * prior.weights, bias + method.share * prior.bias
    seen = [
        bool(gold[:, column].any()) for column in range(len(names))
    ]  # a label no validating row holds has no evidence for a threshold
    thresholds = {n: t for n, t, s in zip(names, best_thresholds(check_scores, gold), seen, strict=True) if s}
    metrics = {
        "validation": validation,
        "validation_rows": len(checked),
        "macro_f1": round(quality, 4),
        "zero_shot_macro_f1": round(zero_shot_quality, 4),
    }
    if not multi_label:
        predicted = check_scores.argmax(axis=1)
        metrics["accuracy"] = round(float(np.mean(gold[np.arange(len(checked)), predicted])), 4)
    fitted = {
        "rows": len(rows),
        "data_sha256": data_sha256,
        "method": method.kind,
        **({"C": method.c, "zero_shot_share": method.share} if method.kind == "logistic regression" else {}),
        "metrics": metrics,
        "fitted_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "scikit_learn": _sklearn_version(),
    }
    head = LinearHead.build(classifier.card, tuple(names), weights, bias, multi_label=multi_label, fitted=fitted)
    return Fitted(head, thresholds, metrics)


@dataclass(frozen=True, slots=True)
class Method:
    kind: str  # zero-shot | prototypes | logistic regression
    c: float = 0.0
    share: float = 0.0


def _matrix(rows: Sequence[Row], table: dict[str, np.ndarray]) -> np.ndarray:
    return np.stack([table[r.text] for r in rows]).astype(np.float64)


def _prototypes(
    rows: Sequence[Row], table: dict[str, np.ndarray], label_vectors: np.ndarray, names: Sequence[str]
) -> np.ndarray:
    """Each label's text vector plus the mean of its examples' vectors, normalised (EmbeddingClassifier.prototypes)."""
    column = {name: i for i, name in enumerate(names)}
    members: list[list[np.ndarray]] = [[] for _ in names]
    for row in rows:
        for name in row.labels:
            members[column[name]].append(table[row.text])
    out = label_vectors.astype(np.float64).copy()
    for i, vectors in enumerate(members):
        if vectors:
            out[i] += np.mean(vectors, axis=0)
    normalised: np.ndarray = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return normalised


def _indicator(rows: Sequence[Row], names: Sequence[str]) -> np.ndarray:
    column = {name: i for i, name in enumerate(names)}
    gold = np.zeros((len(rows), len(names)), dtype=bool)
    for i, row in enumerate(rows):
        gold[i, [column[name] for name in row.labels]] = True
    return gold


def _scores(logits: np.ndarray, multi_label: bool) -> np.ndarray:
    if multi_label:
        out: np.ndarray = 1.0 / (1.0 + np.exp(-logits))
        return out
    return softmax(logits, axis=-1)


def _macro_f1(scores: np.ndarray, gold: np.ndarray, multi_label: bool) -> float:
    """Single-label: the top label is the prediction; multi-label: every label scoring 0.5 or more. Averaged over
    the labels present in the gold rows or the predictions (as scikit-learn's macro average)."""
    if multi_label:
        predicted = scores >= 0.5
    else:
        predicted = np.zeros_like(gold)
        predicted[np.arange(len(scores)), scores.argmax(axis=1)] = True
    f1, present = f1_by_label(predicted, gold)
    return float(np.mean(f1[present])) if present.any() else 0.0


def _fitted_logits(
    fit: Sequence[Row],
    check: Sequence[Row],
    table: dict[str, np.ndarray],
    prototypes: np.ndarray,
    names: Sequence[str],
    c: float,
    multi_label: bool,
) -> np.ndarray:
    weights, bias = _fit(fit, table, prototypes, names, c, multi_label)
    out: np.ndarray = _matrix(check, table) @ weights.T + bias
    return out


def _fit(
    rows: Sequence[Row],
    table: dict[str, np.ndarray],
    prototypes: np.ndarray,
    names: Sequence[str],
    c: float,
    multi_label: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Logistic regression on the rows' vectors plus each label's own text (worth PRIOR_WEIGHT rows): W, b in
    label order (float64)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    X = np.vstack([np.stack([table[r.text] for r in rows]), prototypes]).astype(np.float64)
    weight = np.concatenate([np.ones(len(rows)), np.full(len(names), PRIOR_WEIGHT)])
    gold = np.vstack([_indicator(rows, names), np.eye(len(names), dtype=bool)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # MAX_ITER bounds the time; validation judges it
        if not multi_label:
            y = gold.argmax(axis=1)
            model = LogisticRegression(C=c, class_weight="balanced", max_iter=MAX_ITER)
            model.fit(X, y, sample_weight=weight)
            return _by_label(model.coef_, model.intercept_, model.classes_, len(names))
        weights = np.zeros((len(names), X.shape[1]))
        bias = np.zeros(len(names))
        for column in range(len(names)):
            if gold[:, column].all() or not gold[:, column].any():  # one class only: nothing to tell apart
                bias[column] = CONSTANT_LOGIT if gold[0, column] else -CONSTANT_LOGIT
                continue
            model = LogisticRegression(C=c, class_weight="balanced", max_iter=MAX_ITER)
            model.fit(X, gold[:, column], sample_weight=weight)
            weights[column], bias[column] = model.coef_[0], model.intercept_[0]
        return weights, bias


def _by_label(
    coef: np.ndarray, intercept: np.ndarray, classes: np.ndarray, count: int
) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's multinomial weights as one row per label; its two-class form (one row for class 1) as
    two rows of the same softmax."""
    if len(classes) == 2 and coef.shape[0] == 1:
        coef = np.vstack([-coef[0] / 2, coef[0] / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    weights = np.zeros((count, coef.shape[1]))
    bias = np.zeros(count)
    weights[classes] = coef
    bias[classes] = intercept
    return weights, bias


def _sklearn_version() -> str:
    import sklearn

    return str(sklearn.__version__)
