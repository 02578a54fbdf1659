"""Learned heads (worker/engine/heads.py): validated on load, served by the engine only on the model they were
fitted on; anywhere else the request is scored zero-shot and says why."""

from __future__ import annotations

import base64
import logging
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from schemas import ClassifyRequest, ParsedRequest
from worker.engine.embedding import EmbeddingClassifier
from worker.engine.engine import Engine
from worker.engine.heads import LinearHead
from worker.engine.results import Answer
from worker.settings import load_settings

LABELS = ("billing", "shipping", "praise")


def _head(engine: Engine, *, revision: str | None = None, multi_label: bool = False) -> LinearHead:
    """A head whose rows are the labels' own vectors, sharpened: a real, if simple, head for this model."""
    classifier = engine.classifier()
    assert isinstance(classifier, EmbeddingClassifier)
    vectors, _ = classifier.embed(["a question about a bill or a charge", "where is my parcel", "thank you, great"])
    card = classifier.card if revision is None else replace(classifier.card, revision=revision)
    return LinearHead.build(card, LABELS, vectors * 20, np.array([0.1, -0.2, 0.0]), multi_label=multi_label)


def _request(text: str, **fields: Any) -> ClassifyRequest:
    return ClassifyRequest(text=text, labels=list(LABELS), **fields)


def test_a_head_scores_by_one_matmul_on_the_text_vector(minilm_engine: Engine) -> None:
    head = _head(minilm_engine)
    texts = ["I was charged twice this month", "my package never arrived"]
    [answer_a, answer_b] = minilm_engine.answer([ParsedRequest(_request(t)) for t in texts], [head, head])
    classifier = minilm_engine.classifier()
    assert isinstance(classifier, EmbeddingClassifier)
    expected = head.scores(classifier.embed(texts)[0])
    for answer, row in zip([answer_a, answer_b], expected, strict=True):
        assert isinstance(answer, Answer)
        assert answer.scorer == "head" and answer.scorer_note is None
        assert answer.scores == pytest.approx(tuple(row), abs=1e-6)
        assert sum(answer.scores) == pytest.approx(1.0)
    assert (answer_a.top, answer_b.top) == ("billing", "shipping")  # type: ignore[union-attr]
    result = answer_a.result()  # type: ignore[union-attr]
    assert result.scorer == "head"


def test_multi_label_heads_score_each_label_on_its_own(minilm_engine: Engine) -> None:
    head = _head(minilm_engine, multi_label=True)
    [answer] = minilm_engine.answer([ParsedRequest(_request("thanks, lovely service", multi_label=True))], [head])
    assert isinstance(answer, Answer) and answer.scorer == "head"
    logits = head.matrix @ minilm_engine.classifier().embed(["thanks, lovely service"])[0][0] + head.offsets  # type: ignore[attr-defined]
    assert answer.scores == pytest.approx(tuple(1 / (1 + np.exp(-logits))), abs=1e-6)


def test_a_head_from_another_model_revision_is_refused_with_the_fallback_visible(
    minilm_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    stale = _head(minilm_engine, revision="0000older000")
    request = _request("I was charged twice this month")
    [zero_shot] = minilm_engine.answer([ParsedRequest(request)])
    with caplog.at_level(logging.WARNING, logger="worker.engine.engine"):
        [first] = minilm_engine.answer([ParsedRequest(request)], [stale])
        [second] = minilm_engine.answer([ParsedRequest(request)], [stale])
    for answer in (first, second):
        assert isinstance(answer, Answer) and isinstance(zero_shot, Answer)
        assert answer.scorer == "zero-shot" and answer.scores == zero_shot.scores
        assert answer.scorer_note is not None and "0000older000" in answer.scorer_note
        assert "refit" in answer.scorer_note
    warnings = [r for r in caplog.records if "0000older000" in r.getMessage()]
    assert len(warnings) == 1  # said once per head and model, not once per batch


def test_a_head_in_the_wrong_mode_or_for_other_labels_is_not_used(minilm_engine: Engine) -> None:
    head = _head(minilm_engine)
    [mode] = minilm_engine.answer([ParsedRequest(_request("thanks", multi_label=True))], [head])
    other = ClassifyRequest(text="thanks", labels=["billing", "praise", "shipping"])
    [order] = minilm_engine.answer([ParsedRequest(other)], [head])
    assert isinstance(mode, Answer) and mode.scorer == "zero-shot" and "single-label" in (mode.scorer_note or "")
    assert isinstance(order, Answer) and order.scorer == "zero-shot" and "other labels" in (order.scorer_note or "")


def test_a_batch_scored_by_heads_alone_needs_no_zero_shot_pass() -> None:
    """Found by the accuracy benchmark: with the result cache off, a batch whose every request was scored by a
    head sent an empty list on to zero-shot scoring, which failed."""
    engine = Engine(load_settings(result_cache_size=0))
    head = _head(engine)
    answers = engine.answer([ParsedRequest(_request("where is my parcel"))] * 3, [head] * 3)
    assert [a.scorer for a in answers] == ["head"] * 3  # type: ignore[union-attr]


def test_the_result_cache_keeps_head_and_zero_shot_scores_apart(minilm_engine: Engine) -> None:
    request = _request("where is my parcel, it is late")
    [zero_shot] = minilm_engine.answer([ParsedRequest(request)])  # cached now
    [headed] = minilm_engine.answer([ParsedRequest(request)], [_head(minilm_engine)])
    assert isinstance(zero_shot, Answer) and isinstance(headed, Answer)
    assert headed.scorer == "head" and headed.scores != zero_shot.scores


def _fields(head: LinearHead) -> dict[str, Any]:
    return head.model_dump()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f | {"weights": f["weights"][:-8]}, "bytes"),
        (lambda f: f | {"weights": "not base64!"}, "base64"),
        (lambda f: f | {"bias": f["bias"][:2]}, "biases"),
        (lambda f: f | {"bias": (float("nan"), 0.0, 0.0)}, "finite"),
        (
            lambda f: f | {"weights": base64.b64encode(np.full((3, f["dim"]), 1e9, "<f4").tobytes()).decode()},
            "beyond",
        ),
        (
            lambda f: f | {"weights": base64.b64encode(np.full((3, f["dim"]), np.inf, "<f4").tobytes()).decode()},
            "finite",
        ),
        (lambda f: f | {"dim": 10**6}, "dim"),
        (lambda f: f | {"labels": ("a", "a", "b")}, "unique"),
        (lambda f: f | {"kind": "mlp"}, "kind"),
    ],
)
def test_a_bad_stored_head_fails_validation_on_load(minilm_engine: Engine, change: Any, message: str) -> None:
    fields = _fields(_head(minilm_engine))
    with pytest.raises(ValidationError, match=message):
        LinearHead.model_validate(change(fields))


def test_a_head_survives_its_json_round_trip(minilm_engine: Engine) -> None:
    head = _head(minilm_engine)
    again = LinearHead.model_validate_json(head.model_dump_json())
    assert np.array_equal(again.matrix, head.matrix) and again.digest == head.digest
