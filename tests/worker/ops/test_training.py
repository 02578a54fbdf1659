"""Fitting a label set's head (worker/ops/training.py) on the embedded model, with small made-up data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from schemas import ClassifyRequest, Label
from worker.engine.embedding import EmbeddingClassifier
from worker.engine.engine import Engine
from worker.errors import InputError
from worker.ops import training
from worker.ops.training import Row

SUBJECTS = ["my card", "the app", "my account", "the transfer", "my order", "the refund", "my payment", "the fee"]
INTENTS = {
    "complaint": ["{} is broken and I am furious", "terrible service, {} failed again", "{} keeps failing, awful"],
    "thanks": ["thank you so much for fixing {}", "great job with {}, thanks", "{} works perfectly now, cheers"],
    "question": ["how do I change {}?", "where can I see {}?", "what is the status of {}?"],
}


def rows(per_label: int, offset: int = 0) -> list[Row]:
    out = []
    for name, patterns in INTENTS.items():
        for i in range(per_label):
            subject = SUBJECTS[(i + offset) % len(SUBJECTS)]
            out.append(Row(patterns[(i + offset) % len(patterns)].format(subject), (name,)))
    return out


@pytest.fixture(scope="module")
def classifier(minilm_engine: Engine) -> EmbeddingClassifier:
    loaded = minilm_engine.classifier()
    assert isinstance(loaded, EmbeddingClassifier)
    return loaded


LABELS = tuple(Label(name=name) for name in INTENTS)


def test_a_head_learns_the_labels_and_records_how_it_was_made(classifier: EmbeddingClassifier) -> None:
    fitted = training.fit_head(classifier, LABELS, rows(12), multi_label=False, data_sha256="abc")
    test = rows(4, offset=5)
    vectors, _ = classifier.embed([r.text for r in test])
    predicted = fitted.head.scores(vectors).argmax(axis=1)
    names = list(INTENTS)
    accuracy = np.mean([names[p] == r.labels[0] for p, r in zip(predicted, test, strict=True)])
    assert accuracy >= 0.9
    head = fitted.head
    assert (head.model, head.model_revision, head.labels) == (
        classifier.card.name,
        classifier.card.revision,
        tuple(names),
    )
    assert head.fitted["rows"] == 36 and head.fitted["data_sha256"] == "abc"
    assert fitted.metrics["validation"] == "5-fold cross-validation" and fitted.metrics["validation_rows"] == 36
    assert fitted.metrics["macro_f1"] >= fitted.metrics["zero_shot_macro_f1"]
    assert set(fitted.thresholds) == set(names) and all(0 <= t <= 1 for t in fitted.thresholds.values())


def test_validation_rows_given_are_used_and_not_fitted_on(classifier: EmbeddingClassifier) -> None:
    fitted = training.fit_head(classifier, LABELS, rows(6), multi_label=False, val_rows=rows(3, offset=3))
    assert fitted.metrics["validation"] == "the --val file" and fitted.metrics["validation_rows"] == 9
    assert fitted.head.fitted["rows"] == 18


def test_with_no_evidence_for_the_examples_the_head_is_zero_shot(classifier: EmbeddingClassifier) -> None:
    """Labels whose examples contradict their names: validation cannot prefer the examples to zero-shot,
    so the stored head is the zero-shot scorer itself (what the worker would have computed without it)."""
    labels = (Label(name="weather report"), Label(name="football match"))
    mixed = [
        Row("sunny with a light breeze", ("football match",)),
        Row("the striker scored twice", ("weather report",)),
    ]
    fitted = training.fit_head(classifier, labels, mixed, multi_label=False)
    assert fitted.head.fitted["method"] == "zero-shot"
    request = ClassifyRequest(text="rain tomorrow", labels=["weather report", "football match"])
    request_scores = classifier.score([request])[0].scores
    vectors, _ = classifier.embed(["rain tomorrow"])
    assert tuple(fitted.head.scores(vectors)[0]) == pytest.approx(request_scores, abs=1e-5)


def test_multi_label_heads_are_one_vs_rest(classifier: EmbeddingClassifier) -> None:
    data = [
        Row(r.text, (*r.labels, "about money") if "fee" in r.text or "payment" in r.text else r.labels) for r in rows(8)
    ]
    labels = (*LABELS, Label(name="about money"))
    fitted = training.fit_head(classifier, labels, data, multi_label=True)
    assert fitted.head.multi_label and fitted.head.labels[-1] == "about money"
    scores = fitted.head.scores(classifier.embed(["thank you so much for fixing the fee"])[0])[0]
    assert scores[list(INTENTS).index("thanks")] > 0.5 and scores[-1] > 0.5
    assert not np.isclose(scores.sum(), 1.0)


def test_labels_the_set_lacks_and_single_label_sets_of_one_are_refused(classifier: EmbeddingClassifier) -> None:
    with pytest.raises(InputError, match="not in the label set"):
        training.fit_head(classifier, LABELS[:2], rows(3), multi_label=False)
    with pytest.raises(InputError, match="two labels"):
        training.fit_head(classifier, LABELS[:1], rows(3)[:3], multi_label=False)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"text": "a", "label": "x"}\nnot json\n', "data.jsonl:2: not JSON"),
        ('{"text": "", "label": "x"}\n', "data.jsonl:1: each line must be an object"),
        ('{"text": "a", "label": {"x": 1}}\n', "data.jsonl:1: 'label' must be"),
        ("\n", "no labelled rows"),
    ],
)
def test_bad_data_files_are_one_line_naming_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text(content)
    with pytest.raises(InputError, match=message):
        training.read_rows(path)


def test_multi_label_rows_are_lists(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps({"text": "a", "label": ["x", "y", "x"]}) + "\n")
    assert training.read_rows(path) == ([Row("a", ("x", "y"))], True)
