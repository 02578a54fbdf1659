"""The NLI classifier on real onnxruntime sessions of the generated DeBERTa-v2 test models, against the
scores transformers' zero-shot-classification pipeline gave on the same models (tools/make_test_models.py)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from schemas import ClassificationResult, ClassifyRequest, ParsedRequest
from tests.conftest import MODELS, NLI_VARIANTS
from worker.engine.engine import Engine
from worker.engine.models import describe_directory
from worker.engine.nli import NliClassifier
from worker.settings import Settings

TOLERANCE = 1e-4


def requests_for(cases: list[dict[str, Any]], model: str) -> list[ParsedRequest]:
    return [
        ParsedRequest(
            ClassifyRequest(
                id=f"case-{i}",
                text=c["text"],
                labels=c["labels"],
                hypothesis_template=c["hypothesis_template"],
                multi_label=c["multi_label"],
                model=model,
            )
        )
        for i, c in enumerate(cases)
    ]


@pytest.mark.parametrize("variant", NLI_VARIANTS)
def test_scores_equal_the_hf_pipeline(variant: str, settings: Settings, golden: dict[str, Any]) -> None:
    """All golden cases in one batch: different label sets, templates, single- and multi-label."""
    cases = golden["models"][variant]
    assert {c["multi_label"] for c in cases} == {True, False}
    assert len({tuple(c["labels"]) for c in cases}) > 3
    outcomes = Engine(settings).classify(requests_for(cases, f"test/{variant}"))
    for case, outcome in zip(cases, outcomes, strict=True):
        assert isinstance(outcome, ClassificationResult), outcome
        got = {item.label: item.score for item in outcome.labels}
        for label, expected in case["scores"].items():
            assert got[label] == pytest.approx(expected, abs=TOLERANCE), (case["text"], label)
        assert outcome.top == max(case["scores"], key=case["scores"].get)


def test_batch_order_and_duplicates_do_not_change_scores(settings: Settings, golden: dict[str, Any]) -> None:
    cases = golden["models"]["nli-2class"]
    engine = Engine(settings.model_copy(update={"result_cache_size": 0}))  # every batch runs the model
    requests = requests_for(cases, "test/nli-2class")
    alone = [engine.classify([request])[0] for request in requests]
    mixed = requests * 3
    random.Random(7).shuffle(mixed)
    together = engine.classify(mixed)
    by_id = {o.id: o for o in alone}
    for outcome in together:
        assert isinstance(outcome, ClassificationResult)
        reference = by_id[outcome.id]
        assert isinstance(reference, ClassificationResult)
        for a, b in zip(outcome.labels, reference.labels, strict=True):
            assert a.label == b.label and a.score == pytest.approx(b.score, abs=1e-5)


def test_identical_pairs_are_computed_once(settings: Settings) -> None:
    engine = Engine(settings)
    classifier = engine.classifier("test/nli-2class")
    assert isinstance(classifier, NliClassifier)
    same = ClassifyRequest(text="the same text", labels=["a", "b", "c"])  # type: ignore[list-item]
    classifier.score([same, same, same.model_copy(update={"id": "other"})])
    assert classifier.last_plan is not None and classifier.last_plan.real_tokens > 0
    assert sum(len(run) for run in classifier.last_plan.runs) == 3


def test_long_text_is_truncated_and_flagged(settings: Settings) -> None:
    engine = Engine(settings)
    long_text = "word " * 500
    request = ClassifyRequest(text=long_text, labels=["a", "b"], model="test/nli-2class-static")  # type: ignore[list-item]
    outcome = engine.classify([ParsedRequest(request)])[0]
    assert isinstance(outcome, ClassificationResult) and outcome.truncated


def test_model_facts_come_from_the_model_files() -> None:
    two = describe_directory(MODELS / "nli-2class", prefer_quantized=False)
    three = describe_directory(MODELS / "nli-3class")
    assert (two.kind, two.entailment_id, two.contradiction_id, two.max_length) == ("nli", 0, 1, 48)
    assert (three.entailment_id, three.contradiction_id, three.num_labels) == (2, 0, 3)
    assert describe_directory(MODELS / "nli-2class").quantized  # int8 preferred when present
    assert not two.quantized


def test_only_declared_inputs_and_static_shapes(settings: Settings) -> None:
    engine = Engine(settings)
    dynamic = engine.classifier("test/nli-2class")
    static = engine.classifier("test/nli-2class-static")
    with_types = engine.classifier("test/nli-3class")
    assert isinstance(dynamic, NliClassifier) and isinstance(static, NliClassifier)
    assert isinstance(with_types, NliClassifier)
    assert "token_type_ids" not in dynamic.model.input_names and "token_type_ids" in with_types.model.input_names
    assert dynamic.model.static_sequence_length is None and static.model.static_sequence_length == 48


def test_int8_model_agrees_with_fp32(models_dir: Any, golden: dict[str, Any]) -> None:
    from worker.settings import load_settings

    cases = golden["models"]["nli-2class"]
    int8 = Engine(load_settings(models_dir=models_dir, prefer_quantized=True))
    assert int8.classifier("test/nli-2class").card.quantized
    for case, outcome in zip(cases, int8.classify(requests_for(cases, "test/nli-2class")), strict=True):
        assert isinstance(outcome, ClassificationResult)
        for item in outcome.labels:
            assert item.score == pytest.approx(case["scores"][item.label], abs=0.1)


def test_a_hypothesis_longer_than_the_model_limit_still_scores(settings: Settings) -> None:
    """only_first truncation cannot shorten a hypothesis; the encoder falls back instead of failing the batch."""
    engine = Engine(settings)
    huge_label = "a label " * 30  # far past the test model's 48 tokens on its own
    batch = [
        ParsedRequest(ClassifyRequest(text="short text", labels=[huge_label, "b"], model="test/nli-2class-static")),  # type: ignore[list-item]
        ParsedRequest(ClassifyRequest(text="another", labels=["c", "d"], model="test/nli-2class-static")),  # type: ignore[list-item]
    ]
    first, second = engine.classify(batch)
    assert isinstance(first, ClassificationResult) and first.truncated
    assert isinstance(second, ClassificationResult) and not second.truncated
    assert sum(item.score for item in first.labels) == pytest.approx(1.0)


def test_description_is_the_hypothesis_and_the_name_is_reported(settings: Settings) -> None:
    engine = Engine(settings)
    described = ClassifyRequest(
        text="my card never came",
        model="test/nli-3class",
        labels=[{"name": "card_arrival", "description": "a card that has not arrived"}, "fees"],
    )  # type: ignore[list-item]
    spelled = ClassifyRequest(
        text="my card never came", model="test/nli-3class", labels=["a card that has not arrived", "fees"]
    )  # type: ignore[list-item]
    a, b = engine.classify([ParsedRequest(described), ParsedRequest(spelled)])
    assert isinstance(a, ClassificationResult) and isinstance(b, ClassificationResult)
    scores_a = {i.label: i.score for i in a.labels}
    scores_b = {i.label: i.score for i in b.labels}
    assert scores_a["card_arrival"] == pytest.approx(scores_b["a card that has not arrived"], abs=1e-6)


@pytest.mark.parametrize("variant", ["nli-2class", "nli-3class"])
def test_pairs_encode_exactly_as_the_tokenizer_encodes_them(variant: str) -> None:
    """Each premise and hypothesis is tokenised once and joined by the tokenizer's own post-processor: the
    ids, type ids and truncation flags equal a pair-by-pair `encode`, also when one long premise (cut to the
    model's limit) is shared by several hypotheses."""
    from tokenizers import Tokenizer

    from worker.engine.tokenization import TextEncoder

    card = describe_directory(MODELS / variant, prefer_quantized=False)
    encoder = TextEncoder(card)
    reference = Tokenizer.from_file(str(card.tokenizer_path))
    reference.no_padding()
    reference.enable_truncation(encoder.max_length, strategy="only_first")
    long_text = "the parcel never arrived and nobody answers the phone " * 20
    pairs = [
        (text, hypothesis)
        for text in (long_text, "refund please", long_text[:60])
        for hypothesis in ("This example is billing.", "This example is delivery delay.", "This example is praise.")
    ]
    encoded = encoder.encode_pairs(pairs)
    expected = [reference.encode(premise, hypothesis) for premise, hypothesis in pairs]
    assert [e.ids for e in encoded] == [x.ids for x in expected]
    assert [e.type_ids for e in encoded] == [x.type_ids for x in expected]
    assert [e.truncated for e in encoded] == [bool(x.overflowing) for x in expected]
    assert encoded[0].truncated and len(encoded[0]) == encoder.max_length  # the long premise was cut, each time
    assert not encoded[3].truncated
