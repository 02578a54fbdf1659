"""A threshold is fitted from positive rows or not at all: a label without any was given its lowest score as the
F1-best threshold (0.0 in practice), and was then accepted on every result (`labelq labelsets fit`, refits,
`labelq eval --fit-thresholds`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import redis as redis_lib
import yaml

from schemas import ClassificationResult, ClassifyRequest, Label, ParsedRequest
from tests.worker.stream.test_labelsets import TEACHING, labelq
from worker.engine.embedding import EmbeddingClassifier
from worker.engine.engine import Engine
from worker.ops import evaluation, training
from worker.ops.training import Row
from worker.stream.labelsets import LabelSetStore


@pytest.fixture(scope="module")
def classifier(minilm_engine: Engine) -> EmbeddingClassifier:
    loaded = minilm_engine.classifier()
    assert isinstance(loaded, EmbeddingClassifier)
    return loaded


def test_a_label_without_positive_rows_gets_a_threshold_that_accepts_nothing_below_1() -> None:
    scores = np.array([[0.9, 0.0001], [0.2, 0.3], [0.7, 0.05]])
    gold = np.array([[True, False], [False, False], [True, False]])
    assert evaluation.best_thresholds(scores, gold) == [0.7, 1.0]


def test_eval_leaves_out_the_thresholds_of_labels_its_data_lacks() -> None:
    report = evaluation.Report(
        n=2,
        accuracy=1.0,
        macro_f1=1.0,
        per_label_f1={},
        confused=[],
        scores=[{"refund": 0.8, "card_arrival": 0.0001}, {"refund": 0.1, "card_arrival": 0.0002}],
    )
    fitted = evaluation.fit_thresholds(report, ["refund", "refund"], ["refund", "card_arrival"])
    assert fitted == {"refund": 0.1}  # card_arrival keeps the set's own threshold when put --thresholds-from


def test_a_head_fits_no_threshold_for_a_label_its_validation_rows_lack(classifier: EmbeddingClassifier) -> None:
    labels = (*(Label(name=name) for name in TEACHING), Label(name="question"))
    rows = [Row(text, (name,)) for name, texts in TEACHING.items() for text in texts]
    rows.append(Row("how do I change my address?", ("question",)))
    val = [Row(text, (name,)) for name, texts in TEACHING.items() for text in texts[:2]]  # no question among them
    fitted = training.fit_head(classifier, labels, rows, multi_label=False, val_rows=val)
    assert set(fitted.thresholds) == set(TEACHING)


def _data(tmp_path: Path) -> tuple[Path, Path]:
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": n}) + "\n" for n, ts in TEACHING.items() for t in ts))
    labels = tmp_path / "feedback.yaml"
    labels.write_text("labels: [complaint, thanks, card_arrival, refund_not_showing_up]\n")
    return data, labels


def test_fit_refuses_labels_without_rows_unless_told_to_keep_them_never_accepted(
    redis_url: str, tmp_path: Path, minilm_engine: Engine
) -> None:
    data, labels = _data(tmp_path)
    refused = labelq(redis_url, "fit", "feedback", "--data", str(data), "--labels-from", str(labels))
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert f"{data}: no rows of 2 labels (card_arrival, refund_not_showing_up)" in refused.stderr
    assert "--keep-labels-without-rows" in refused.stderr
    assert labelq(redis_url, "get", "feedback").returncode == 1  # nothing stored

    kept = labelq(
        redis_url, "fit", "feedback", "--data", str(data), "--labels-from", str(labels), "--keep-labels-without-rows"
    )
    assert kept.returncode == 0, kept.stderr
    assert "2 labels (card_arrival, refund_not_showing_up) had no rows: stored with threshold 1.0" in kept.stderr
    stored = yaml.safe_load(labelq(redis_url, "get", "feedback").stdout)
    thresholds = {label["name"]: label.get("threshold") for label in stored["labels"]}
    assert thresholds["card_arrival"] == thresholds["refund_not_showing_up"] == 1.0
    assert 0.0 < thresholds["complaint"] < 1.0

    # served as the workers serve it: the labels no row taught are not accepted
    labelset = LabelSetStore(redis_lib.Redis.from_url(redis_url)).get("feedback")
    assert labelset is not None and labelset.head is not None
    for text in ["thank you so much, it works", "it failed again, awful", "where is my card?"]:
        request = labelset.apply_to(ClassifyRequest(text=text, label_set="feedback"))
        result = minilm_engine.classify([ParsedRequest(request)], heads=[labelset.head])[0]
        assert isinstance(result, ClassificationResult) and result.scorer == "head"
        assert not {"card_arrival", "refund_not_showing_up"} & set(result.accepted), result


def test_a_label_in_the_data_but_not_in_the_set_is_said_first_and_before_any_embedding(
    redis_url: str, tmp_path: Path
) -> None:
    """Found by an outside check: with a set label that has no rows and a data label the set lacks, only the first
    was said; with --keep-labels-without-rows the second came after 'embedding N texts' began."""
    data, labels = _data(tmp_path)
    with data.open("a") as extra:
        extra.write(json.dumps({"text": "what a lovely day", "label": "weather"}) + "\n")
    for keep in ((), ("--keep-labels-without-rows",)):
        refused = labelq(redis_url, "fit", "feedback", "--data", str(data), "--labels-from", str(labels), *keep)
        assert refused.returncode == 2, refused.stderr
        assert "labels in the data but not in the label set: ['weather']" in refused.stderr
        assert "embedding" not in refused.stderr and "Traceback" not in refused.stderr


def test_a_refit_keeps_the_live_threshold_of_a_label_it_could_not_fit_one_for(
    redis_url: str, tmp_path: Path, minilm_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fit_head fits no threshold for a label its validation rows lack (multi-label rows held apart by their
    first label can leave one out): the candidate keeps the live threshold, never a KeyError or 0."""
    from tests.worker.stream.test_corrections import _correct, _items, _teach_feedback
    from worker.ops import refit as refitting
    from worker.stream.corrections import CorrectionStore

    store = _teach_feedback(redis_url, tmp_path)
    _correct(store, _items(lambda rid: True))
    live = store.get("feedback")
    assert live is not None
    real = training.fit_head

    def without_thanks(*args: object, **kwargs: object) -> training.Fitted:
        fitted = real(*args, **kwargs)  # type: ignore[arg-type]
        return training.Fitted(fitted.head, {k: v for k, v in fitted.thresholds.items() if k != "thanks"}, {})

    monkeypatch.setattr(training, "fit_head", without_thanks)
    classifier = minilm_engine.classifier()
    outcome = refitting.refit(store, CorrectionStore(store.client, store, 1000), classifier, "feedback")  # type: ignore[arg-type]
    candidate = store.get("feedback") if outcome.promoted else store.candidate("feedback")
    assert candidate is not None and candidate.head is not None and candidate.head.digest != live.head.digest  # type: ignore[union-attr]
    by_name = {label.name: label.threshold for label in candidate.labels}
    assert by_name["thanks"] == next(label.threshold for label in live.labels if label.name == "thanks")
