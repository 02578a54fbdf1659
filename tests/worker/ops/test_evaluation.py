"""Evaluation on labelled data: its limits are the engine's, and macro-F1 averages over the labels present."""

from __future__ import annotations

from worker.engine.engine import Engine
from worker.engine.fake import FAKE_MODEL, FakeClassifier
from worker.ops import evaluation as ev
from worker.settings import load_settings


def test_a_set_of_150_labels_is_evaluated_under_the_engines_limits() -> None:
    engine = Engine(load_settings(model=FAKE_MODEL, max_labels=200), classifiers={FAKE_MODEL: FakeClassifier()})
    names = [f"intent {i}" for i in range(150)]
    data = [ev.Example(text=f"about intent {i}", label=f"intent {i}") for i in range(0, 150, 30)]
    report = ev.evaluate(engine, data, ev.build_labels(names, {}, {}))
    assert report.n == 5 and len(report.per_label_f1) == 150


def test_macro_f1_averages_over_the_labels_present() -> None:
    names = ["a", "b", "c", "d"]
    report = ev.score_predictions(["a", "a", "b"], ["a", "a", "b"], names)
    assert report.macro_f1 == 1.0 and report.macro_f1_labels == ("a", "b")  # c and d are in neither
    mixed = ev.score_predictions(["a", "b"], ["a", "c"], names)
    assert mixed.macro_f1_labels == ("a", "b", "c") and abs(mixed.macro_f1 - 1 / 3) < 1e-9
    assert ev.report_dict(mixed)["macro_f1_over"] == "3 of 4 labels (in data or predicted)"
    assert ev.report_dict(mixed)["macro_f1_labels"] == ["a", "b", "c"]
