"""Score semantics and batching arithmetic, on hand-made arrays (no model)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from schemas import ClassifyRequest, Shortlist, parse_result
from worker.engine.batching import pad_run, plan_runs
from worker.engine.models import ModelCard
from worker.engine.results import Scored, build_answer
from worker.engine.scoring import cosine_scores, nli_scores
from worker.engine.tokenization import Encoded

TWO_CLASS = {"entailment_id": 0, "contradiction_id": 1}  # {0: entailment, 1: not_entailment}
THREE_CLASS = {"entailment_id": 2, "contradiction_id": 0}  # {0: contradiction, 1: neutral, 2: entailment}


def test_single_label_is_a_softmax_over_entailment_logits() -> None:
    logits = np.array([[2.0, 0.0], [1.0, 5.0], [0.0, 0.0]])
    scores = nli_scores(logits, multi_label=False, **TWO_CLASS)
    expected = np.exp([2.0, 1.0, 0.0]) / np.exp([2.0, 1.0, 0.0]).sum()
    np.testing.assert_allclose(scores, expected)
    assert scores.sum() == pytest.approx(1.0)


def test_multi_label_is_entailment_against_contradiction_per_label() -> None:
    logits = np.array([[2.0, 0.0], [1.0, 5.0]])
    scores = nli_scores(logits, multi_label=True, **TWO_CLASS)
    np.testing.assert_allclose(scores, [1 / (1 + np.exp(-2.0)), 1 / (1 + np.exp(4.0))])


def test_three_class_ignores_neutral_in_multi_label() -> None:
    logits = np.array([[0.5, 9.0, 1.5]])
    multi = nli_scores(logits, multi_label=True, **THREE_CLASS)
    np.testing.assert_allclose(multi, [1 / (1 + np.exp(-1.0))])


def test_one_label_uses_the_multi_label_formula() -> None:
    logits = np.array([[3.0, 1.0]])
    assert nli_scores(logits, multi_label=False, **TWO_CLASS) == pytest.approx(1 / (1 + np.exp(-2.0)))


def test_cosine_scores() -> None:
    cosines = np.array([0.6, 0.3, 0.1])
    single = cosine_scores(cosines, multi_label=False, temperature=0.1, center=0.3, scale=0.05)
    assert single.sum() == pytest.approx(1.0) and single.argmax() == 0
    multi = cosine_scores(cosines, multi_label=True, temperature=0.1, center=0.3, scale=0.05)
    np.testing.assert_allclose(multi, 1 / (1 + np.exp(-(cosines - 0.3) / 0.05)))


def test_plan_respects_budget_and_sorts_by_length() -> None:
    rng = np.random.default_rng(0)
    lengths = [int(n) for n in rng.integers(16, 257, size=500)]
    plan = plan_runs(lengths, token_budget=4096, max_items=64)
    assert sorted(i for run in plan.runs for i in run) == list(range(500))  # every item exactly once
    for run in plan.runs:
        width = max(lengths[i] for i in run)
        assert len(run) * width <= 4096 or len(run) == 1
        assert len(run) <= 64
    assert plan.real_tokens == sum(lengths)
    assert plan.padded_tokens == sum(len(run) * max(lengths[i] for i in run) for run in plan.runs)
    assert plan.padding_ratio < 1.10  # sorted: little padding on a mixed 16..256 stream
    unsorted_padded = sum(64 * max(lengths[i : i + 64]) for i in range(0, 500, 64))
    assert plan.padded_tokens < unsorted_padded


def test_plan_with_static_length_counts_full_width() -> None:
    plan = plan_runs([5, 7, 9, 3], token_budget=100, max_items=64, static_length=48)
    assert [len(run) for run in plan.runs] == [2, 2]
    assert plan.padded_tokens == 4 * 48


def test_pad_run_right_pads_and_zeroes_types_when_asked() -> None:
    items = [Encoded([1, 5, 2], [0, 0, 1], False), Encoded([1, 2], [0, 1], False)]
    feeds = pad_run(items, pad_id=0)
    np.testing.assert_array_equal(feeds["input_ids"], [[1, 5, 2], [1, 2, 0]])
    np.testing.assert_array_equal(feeds["attention_mask"], [[1, 1, 1], [1, 1, 0]])
    np.testing.assert_array_equal(feeds["token_type_ids"], [[0, 0, 1], [0, 1, 0]])
    static = pad_run(items, pad_id=9, length=5, token_types=False)
    assert static["input_ids"].shape == (2, 5) and static["input_ids"][1, -1] == 9
    assert not static["token_type_ids"].any()


def _card() -> ModelCard:
    return ModelCard("m", "embedding", Path("m.onnx"), Path("tokenizer.json"), 128, "r1")


def test_a_result_ranks_labels_by_score_ties_in_label_order_with_each_labels_threshold() -> None:
    request = ClassifyRequest(
        text="x",
        labels=["a", {"name": "b", "threshold": 0.2}, "c", "d"],  # type: ignore[list-item]
        thresholds={"c": 0.3},
        multi_label=True,
    )
    answer = build_answer(request, Scored((0.25, 0.25, 0.9, 0.1), False, 1.5), _card(), batch_ms=2.0)
    result = answer.result()
    assert [(s.label, s.score, s.threshold, s.accepted) for s in result.labels] == [
        ("c", 0.9, 0.3, True),
        ("a", 0.25, 0.5, False),  # tied with b: label order kept
        ("b", 0.25, 0.2, True),
        ("d", 0.1, 0.5, False),
    ]
    assert result.accepted == ("c", "b") and result.top == "c" == answer.top
    assert (result.timings.inference_ms, result.timings.batch_ms, result.model_revision) == (1.5, 2.0, "r1")


@pytest.mark.parametrize(
    "stamp",
    [
        {},
        {"queue_ms": 12.34567, "label_set": ("intents", 3)},
        {"shortlist": Shortlist(model="minilm-l6-int8", k=2, candidates=77), "truncated": True},
    ],
)
def test_the_published_json_is_the_validated_results_own(stamp: dict[str, object]) -> None:
    """The worker publishes an Answer's JSON without validating it again: it must be exactly the JSON of the
    validated ClassificationResult, and parse back to it on the producer's side."""
    request = ClassifyRequest(
        id="j-1",
        text="x",
        # names JSON must escape (a quote, a backslash, a control character; non-ASCII it writes as is)
        labels=["refund", {"name": "bug", "threshold": 1e-05}, 'say "hi" \\ caf\u00e9 \U0001f600\t'],  # type: ignore[list-item]
        thresholds=0.3,
        metadata={"tenant": "acme", "n": 3, "ok": True, "none": None, "ratio": 0.5, "note": '"labels":null'},
    )
    scores = (1 / 3, 2e-05, 1 - 1 / 3 - 2e-05)  # floats that print long, and one in exponent form
    answer = replace(build_answer(request, Scored(scores, False, 0.123456), _card(), batch_ms=7.0), **stamp)
    result = answer.result()
    assert answer.json() == result.model_dump_json()
    assert parse_result(answer.json()) == result
    praise = request.labels[2].name
    assert result.top == answer.top == praise and result.accepted == (praise, "refund", "bug")
    assert result.timings.queue_ms == (12.346 if stamp.get("queue_ms") else None)
    assert (result.label_set, result.label_set_version) == (("intents", 3) if "label_set" in stamp else (None, None))
