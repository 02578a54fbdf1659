"""The shortlist stage: MiniLM (real onnxruntime session) picks the labels the NLI test model scores."""

from __future__ import annotations

import logging

import pytest

from schemas import ClassificationResult, ClassifyRequest, ParsedRequest
from worker.engine.engine import Engine
from worker.engine.fake import FakeClassifier
from worker.engine.nli import NliClassifier
from worker.engine.shortlist import shortlist, shortlist_size
from worker.errors import ModelError
from worker.process.runtime import Runtime
from worker.settings import Settings

NLI = "test/nli-2class"
LABELS = [
    "billing",
    "refund request",
    "lost card",
    "app crash",
    "password reset",
    "delivery delay",
    "praise for staff",
    "account closure",
    "exchange rate",
    "cash withdrawal",
    "top up failed",
    "pin blocked",
]


def request(text: str, labels: list[str] = LABELS, **extra: object) -> ClassifyRequest:
    return ClassifyRequest(text=text, labels=labels, model=NLI, **extra)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("default_k", "requested", "labels", "expected"),
    [
        (0, None, 12, 0),  # off by default
        (5, None, 12, 5),  # the worker's default
        (5, 3, 12, 3),  # the request's own k wins
        (5, 0, 12, 0),  # a request may turn it off
        (5, None, 5, 0),  # no more labels than k: every label is scored anyway
        (5, 20, 12, 0),
    ],
)
def test_shortlist_size(default_k: int, requested: int | None, labels: int, expected: int) -> None:
    assert shortlist_size(request("x", LABELS[:labels], shortlist=requested), default_k) == expected


def test_shortlist_keeps_the_rankers_top_k_in_request_order() -> None:
    ranker = FakeClassifier()  # keyword overlap: the labels sharing words with the text rank first
    picked = shortlist(ranker, [request("my card is lost and my pin is blocked", shortlist=2), request("hi")], 0)
    assert [label.name for label in picked[0].request.labels] == ["lost card", "pin blocked"]
    assert picked[0].shortlist is not None
    assert (picked[0].shortlist.model, picked[0].shortlist.k, picked[0].shortlist.candidates) == ("fake", 2, 12)
    assert picked[1].shortlist is None and len(picked[1].request.labels) == 12
    assert ranker.calls == [1]  # only the request that wants a shortlist is ranked


def _result(outcome: object) -> ClassificationResult:
    assert isinstance(outcome, ClassificationResult), outcome
    return outcome


def test_engine_scores_only_the_minilm_shortlist(settings: Settings, minilm_engine: Engine) -> None:
    engine = Engine(settings.model_copy(update={"shortlist_k": 3}))
    text = "I lost my card yesterday and now my PIN is blocked too"
    result = _result(engine.classify([ParsedRequest(request(text))])[0])
    ranked = _result(minilm_engine.classify([ParsedRequest(ClassifyRequest(text=text, labels=LABELS))])[0])
    expected = {item.label for item in ranked.labels[:3]}  # MiniLM's own top 3 for this text
    assert {item.label for item in result.labels} == expected
    assert result.shortlist is not None
    assert (result.shortlist.model, result.shortlist.k, result.shortlist.candidates) == ("minilm-l6-int8", 3, 12)
    assert sum(item.score for item in result.labels) == pytest.approx(1.0)  # softmax over the kept labels
    nli = engine.classifier(NLI)
    assert isinstance(nli, NliClassifier) and nli.last_plan is not None
    assert sum(len(run) for run in nli.last_plan.runs) == 3  # 3 pairs ran, not 12
    # the kept labels are scored exactly as a request naming only them
    kept = [label for label in LABELS if label in expected]
    alone = _result(Engine(settings).classify([ParsedRequest(request(text, kept))])[0])
    assert {i.label: i.score for i in result.labels} == pytest.approx({i.label: i.score for i in alone.labels})


def test_request_turns_the_shortlist_off_and_embedding_models_never_use_it(
    settings: Settings, minilm_engine: Engine
) -> None:
    engine = Engine(settings.model_copy(update={"shortlist_k": 3}))
    full = _result(engine.classify([ParsedRequest(request("my card is lost", shortlist=0))])[0])
    assert len(full.labels) == 12 and full.shortlist is None
    embedded = Engine(minilm_engine.settings.model_copy(update={"shortlist_k": 3}))
    bi = _result(embedded.classify([ParsedRequest(ClassifyRequest(text="my card is lost", labels=LABELS))])[0])
    assert len(bi.labels) == 12 and bi.shortlist is None  # label vectors are cached: nothing to save


def test_unusable_shortlist_model_scores_every_label(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    engine = Engine(settings.model_copy(update={"shortlist_k": 3, "shortlist_model": NLI}))  # not an embedding model
    with caplog.at_level(logging.ERROR, logger="worker.engine.engine"):
        result = _result(engine.classify([ParsedRequest(request("my card is lost"))])[0])
    assert len(result.labels) == 12 and result.shortlist is None
    assert "shortlist model test/nli-2class unusable" in caplog.text


def test_a_worker_with_an_unusable_shortlist_model_stops_at_start_up(settings: Settings) -> None:
    misconfigured = settings.model_copy(update={"model": NLI, "shortlist_k": 3, "shortlist_model": NLI})
    with pytest.raises(ModelError, match="shortlist model test/nli-2class is not an embedding model"):
        Runtime.start(misconfigured)


def test_batch_cost_counts_the_pairs_a_request_will_run(settings: Settings, minilm_engine: Engine) -> None:
    engine = Engine(settings.model_copy(update={"shortlist_k": 3}))
    assert engine.cost(request("x")) == 3  # shortlisted: k pairs, not 12
    assert engine.cost(request("x", shortlist=0)) == 12
    assert engine.cost(request("x", LABELS[:2])) == 2
    assert engine.cost(ClassifyRequest(text="x", label_set="intents", model=NLI)) == 1  # labels come later
    assert engine.cost(ClassifyRequest(text="x", labels=LABELS, model="no/such-model")) == 12  # fails anyway
    # the embedding model: the text, and the label texts not embedded yet. Whether the session's engine has run
    # these labels depends on which tests this process ran before (xdist): cold, 13 at most; once they are
    # embedded, 1 (CI ran this test first in a process and read 13)
    cold = Engine(minilm_engine.settings)
    assert cold.cost(ClassifyRequest(text="x", labels=LABELS)) == 1 + len(LABELS)  # not loaded: nothing cached
    minilm_engine.classify([ParsedRequest(ClassifyRequest(text="warm", labels=LABELS))])
    assert minilm_engine.cost(ClassifyRequest(text="x", labels=LABELS)) == 1  # one text embedding, labels cached
