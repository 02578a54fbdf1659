"""The engine's failure isolation and the embedded default model (real MiniLM onnxruntime session)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from schemas import ClassificationResult, ClassifyRequest, ErrorCode, ErrorResult, ParsedRequest
from worker.engine.embedding import EmbeddingClassifier
from worker.engine.engine import Engine
from worker.engine.fake import FAKE_MODEL, FakeClassifier
from worker.engine.onnx import RunDefaults
from worker.engine.results import Scored
from worker.settings import Settings, load_settings


def parsed(text: str, labels: list[str], **extra: object) -> ParsedRequest:
    return ParsedRequest(ClassifyRequest(text=text, labels=labels, **extra))  # type: ignore[arg-type]


class ExplodingClassifier(FakeClassifier):
    """Fails the whole run whenever a poison text is in it, as a broken model input would."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts: list[int] = []

    def score(self, requests: Sequence[ClassifyRequest]) -> list[Scored]:
        self.attempts.append(len(requests))
        if any("POISON" in r.text for r in requests):
            raise RuntimeError("onnxruntime exploded")
        return super().score(requests)


def test_unknown_model_does_not_take_batch_mates_down(settings: Settings) -> None:
    engine = Engine(settings, classifiers={FAKE_MODEL: FakeClassifier()})
    outcomes = engine.classify(
        [
            parsed("refund my money", ["refund", "bug"], model=FAKE_MODEL),
            parsed("hello", ["a"], model="nobody/no-such-model", id="lost"),
            parsed("app crashes, a bug", ["refund", "bug"], model=FAKE_MODEL),
        ]
    )
    assert isinstance(outcomes[0], ClassificationResult) and outcomes[0].top == "refund"
    assert isinstance(outcomes[1], ErrorResult)
    assert (outcomes[1].code, outcomes[1].field, outcomes[1].id) == (ErrorCode.UNKNOWN_MODEL, "model", "lost")
    assert "nobody/no-such-model" in outcomes[1].message and "test/nli-2class" in outcomes[1].message
    assert isinstance(outcomes[2], ClassificationResult) and outcomes[2].top == "bug"


def test_raw_messages_are_answered_in_order_with_parse_errors_in_place(settings: Settings) -> None:
    fake = FakeClassifier()
    engine = Engine(settings.model_copy(update={"model": FAKE_MODEL}), classifiers={FAKE_MODEL: fake})
    messages = [
        '{"id": "a", "text": "refund please", "labels": ["refund", "bug"]}',
        b'{"id": "b", "text": "no labels"}',
        "not json",
        b'{"id": "d", "text": "it crashes", "labels": ["refund", "bug"]}',
    ]
    outcomes = engine.classify_raw(messages)
    assert [o.status for o in outcomes] == ["ok", "error", "error", "ok"]
    assert [o.id for o in outcomes] == ["a", "b", None, "d"]
    assert fake.calls == [2]  # the two valid requests in one run


def test_a_failing_run_is_retried_alone_so_only_the_culprit_fails(settings: Settings) -> None:
    exploding = ExplodingClassifier()
    engine = Engine(settings.model_copy(update={"model": FAKE_MODEL}), classifiers={FAKE_MODEL: exploding})
    outcomes = engine.classify(
        [parsed("one refund", ["refund"]), parsed("POISON", ["refund"], id="bad"), parsed("two refund", ["refund"])]
    )
    assert [o.status for o in outcomes] == ["ok", "error", "ok"]
    assert isinstance(outcomes[1], ErrorResult) and outcomes[1].code == ErrorCode.INTERNAL_ERROR
    assert outcomes[1].id == "bad"
    assert exploding.attempts == [3, 1, 1, 1]


def test_thresholds_decide_accepted(settings: Settings) -> None:
    engine = Engine(settings.model_copy(update={"model": FAKE_MODEL}), classifiers={FAKE_MODEL: FakeClassifier()})
    outcome = engine.classify(
        [
            parsed(
                "refund bug", ["refund", "bug", "praise"], multi_label=True, thresholds={"refund": 0.99, "praise": 0.0}
            )
        ]
    )[0]
    assert isinstance(outcome, ClassificationResult)
    by_label = {item.label: item for item in outcome.labels}
    assert not by_label["refund"].accepted and by_label["bug"].accepted and by_label["praise"].accepted
    assert outcome.accepted == tuple(i.label for i in outcome.labels if i.score >= i.threshold)
    assert [i.score for i in outcome.labels] == sorted((i.score for i in outcome.labels), reverse=True)


def test_metadata_and_truncation_flag_are_echoed(settings: Settings) -> None:
    engine = Engine(settings.model_copy(update={"model": FAKE_MODEL}), classifiers={FAKE_MODEL: FakeClassifier()})
    request = ClassifyRequest(text="abc", labels=["a"], metadata={"user": 7})  # type: ignore[list-item]
    outcome = engine.classify([ParsedRequest(request, truncated=True)])[0]
    assert isinstance(outcome, ClassificationResult)
    assert outcome.metadata == {"user": 7} and outcome.truncated and outcome.model == FAKE_MODEL


def test_embedded_default_ranks_billing_first(minilm_engine: Engine) -> None:
    outcome = minilm_engine.classify([parsed("I was charged twice for my subscription", ["billing", "bug", "praise"])])[
        0
    ]
    assert isinstance(outcome, ClassificationResult)
    assert outcome.top == "billing" and outcome.model == "minilm-l6-int8"
    assert sum(i.score for i in outcome.labels) == pytest.approx(1.0)


def test_embedding_intent_routing(minilm_engine: Engine) -> None:
    labels = ["billing question", "technical problem", "compliment", "delivery status"]
    texts = {
        "Why was my card charged two times this month?": "billing question",
        "The app crashes every time I press login": "technical problem",
        "Your team was amazing, thank you so much!": "compliment",
        "Where is my parcel? It should have arrived on Monday": "delivery status",
    }
    outcomes = minilm_engine.classify([parsed(text, labels) for text in texts])
    assert [o.top for o in outcomes if isinstance(o, ClassificationResult)] == list(texts.values())


def test_descriptions_and_examples_move_the_prototype(minilm_engine: Engine) -> None:
    classifier = minilm_engine.classifier()
    assert isinstance(classifier, EmbeddingClassifier)
    text = "ur such a clown lol"
    bare = ClassifyRequest(text=text, labels=["offensive", "not offensive"])  # type: ignore[list-item]
    shots = ClassifyRequest(
        text=text,
        labels=[  # type: ignore[list-item]
            {"name": "offensive", "examples": ["you are a clown", "what an idiot", "shut up loser"]},
            {"name": "not offensive", "examples": ["have a nice day", "great game last night"]},
        ],
    )
    described = ClassifyRequest(
        text=text,
        labels=[  # type: ignore[list-item]
            {"name": "offensive", "description": "an insult"},
            {"name": "not offensive", "description": "polite"},
        ],
    )
    a, b, c = (s.scores for s in classifier.score([bare, shots, described]))
    assert a != b and a != c
    assert b[0] > a[0]  # examples of insults pull the text towards "offensive"


def test_embedding_cache_is_bounded_and_reused() -> None:
    engine = Engine(load_settings(embedding_cache_size=5))
    classifier = engine.classifier()
    assert isinstance(classifier, EmbeddingClassifier)
    labels = [f"label number {i}" for i in range(8)]
    classifier.score([ClassifyRequest(text="x", labels=labels)])  # type: ignore[arg-type]
    assert len(classifier._cache) == 5
    classifier.score([ClassifyRequest(text="x", labels=labels[-3:])])  # type: ignore[arg-type]
    assert list(classifier._cache)[-3:] == labels[-3:]


def test_embedding_cache_is_bounded_in_bytes() -> None:
    engine = Engine(load_settings(embedding_cache_mb=1, max_labels=100))
    classifier = engine.classifier()
    assert isinstance(classifier, EmbeddingClassifier)
    for batch in range(8):  # 800 distinct label texts, about 1.8 KB each cached: more than a megabyte
        labels = [f"label {batch}-{i} " + "x" * 250 for i in range(100)]
        classifier.score([ClassifyRequest(text="x", labels=labels)])  # type: ignore[arg-type]
    assert 0 < classifier._cache.bytes <= 1024 * 1024
    assert 300 < len(classifier._cache) < 800


def test_a_label_list_costs_its_uncached_texts_until_it_is_warm(minilm_engine: Engine) -> None:
    labels = [{"name": f"cost-{i}", "examples": [f"example {i}-{j}" for j in range(3)]} for i in range(4)]
    request = ClassifyRequest(text="x", labels=labels)  # type: ignore[arg-type]
    assert minilm_engine.cost(request) == 1 + 4 + 12
    minilm_engine.answer([ParsedRequest(request)])
    assert minilm_engine.cost(request) == 1


def test_multi_label_scores_are_independent(minilm_engine: Engine) -> None:
    text = "The delivery was late and the driver was rude"
    one = minilm_engine.classify([parsed(text, ["late delivery"], multi_label=True)])[0]
    many = minilm_engine.classify([parsed(text, ["late delivery", "rude staff", "billing"], multi_label=True)])[0]
    assert isinstance(one, ClassificationResult) and isinstance(many, ClassificationResult)
    late = next(i for i in many.labels if i.label == "late delivery")
    assert late.score == pytest.approx(one.labels[0].score, abs=1e-6)
    assert {"late delivery", "rude staff"} <= set(many.accepted) and "billing" not in many.accepted


def test_the_result_cache_scores_a_repeated_request_once(settings: Settings) -> None:
    fake = FakeClassifier()
    engine = Engine(
        settings.model_copy(update={"model": FAKE_MODEL, "result_cache_size": 2}), classifiers={FAKE_MODEL: fake}
    )
    first = engine.classify([parsed("refund my order", ["refund", "bug"], multi_label=True)])[0]
    again = engine.classify([parsed("refund my order", ["refund", "bug"], multi_label=True, thresholds=0.99)])[0]
    assert fake.calls == [1]  # the second request never reached the model
    assert isinstance(first, ClassificationResult) and isinstance(again, ClassificationResult)
    assert [i.score for i in again.labels] == [i.score for i in first.labels]
    assert first.accepted == ("refund",) and again.accepted == ()  # thresholds still apply per request
    assert again.timings.inference_ms == 0.0
    engine.classify(
        [
            parsed("refund my order", ["refund", "praise"], multi_label=True),  # other labels: a miss
            parsed("refund my order", ["refund", "bug"]),
        ]
    )  # single-label: a miss
    assert fake.calls == [1, 2] and len(engine.cache) == 2  # bounded: the oldest entry went
    assert (engine.cache.hits, engine.cache.misses) == (1, 3)


def test_no_cache_when_disabled(settings: Settings) -> None:
    fake = FakeClassifier()
    engine = Engine(
        settings.model_copy(update={"model": FAKE_MODEL, "result_cache_size": 0}), classifiers={FAKE_MODEL: fake}
    )
    for _ in range(2):
        engine.classify([parsed("refund my order", ["refund", "bug"])])
    assert fake.calls == [1, 1]


def test_warm_up_runs_a_full_run_at_the_models_length_limit(settings: Settings) -> None:
    from worker.engine.nli import NliClassifier
    from worker.process.runtime import warm_up

    engine = Engine(settings.model_copy(update={"model": "test/nli-2class"}))
    warm_up(engine, engine.settings)
    nli = engine.classifier()
    assert isinstance(nli, NliClassifier) and nli.last_plan is not None
    # the long warm-up text is cut to the model's limit, so the widest shape a request can bring has run once:
    # as many sequences at the limit as a CPU's token budget (256) lets into one run, and at least one
    widest = max(1, min(engine.runs.max_pairs_per_run, engine.runs.token_budget // nli.encoder.max_length))
    assert max(len(run) for run in nli.last_plan.runs) == widest
    assert nli.last_plan.padded_tokens >= engine.runs.max_pairs_per_run * nli.encoder.max_length


def test_warm_up_fills_runs_larger_than_a_requests_label_limit(settings: Settings) -> None:
    """A GPU wants runs of 256 pairs; a request holds at most 100 labels: the warm-up takes several requests
    (a worker with LABELQ_MAX_PAIRS_PER_RUN=256 once died at start-up on a 256-label warm-up request)."""
    from worker.engine.nli import NliClassifier
    from worker.process.runtime import warm_up

    big_runs = {"model": "test/nli-2class", "max_pairs_per_run": 256, "token_budget": 65536}
    engine = Engine(settings.model_copy(update=big_runs))
    warm_up(engine, engine.settings)
    nli = engine.classifier()
    assert isinstance(nli, NliClassifier) and nli.last_plan is not None
    assert max(len(run) for run in nli.last_plan.runs) == 256


def test_requests_sharing_labels_score_as_they_would_alone() -> None:
    engine = Engine(load_settings(result_cache_size=0))  # no cache: "alone" must really run again
    batch = [
        parsed("I was charged twice", ["billing", "bug"]),
        parsed("the app crashes on start", ["billing", "bug"]),
        parsed("the app crashes on start", ["billing", "bug"], multi_label=True),
        parsed("I love this app", ["praise", "complaint", "bug"]),
        parsed("I was charged twice", ["billing", "bug"], hypothesis_template="This is about {}."),
    ]
    together = engine.classify(batch)
    for item, outcome in zip(batch, together, strict=True):
        alone = engine.classify([item])[0]
        assert isinstance(outcome, ClassificationResult) and isinstance(alone, ClassificationResult)
        # abs 1e-5: int8 activations are quantised per run, so batch-mates move a score by ~1e-6
        expected = {i.label: i.score for i in alone.labels}
        assert {i.label: i.score for i in outcome.labels} == pytest.approx(expected, abs=1e-5)
    assert isinstance(together[2], ClassificationResult) and together[2].multi_label
    assert sum(i.score for i in together[2].labels) != pytest.approx(1.0)  # multi-label: sigmoids, not a softmax


def test_a_started_runtime_is_warm_with_one_blas_thread_and_a_frozen_heap(settings: Settings) -> None:
    import gc

    from threadpoolctl import threadpool_info, threadpool_limits

    from worker.process.runtime import Runtime

    threadpool_limits(limits=2, user_api="blas")  # as a fresh process has them (one per core)
    gc.unfreeze()
    try:
        runtime = Runtime.start(settings.model_copy(update={"model": "test/nli-2class"}))
        assert runtime.engine.classifier().card.name == "test/nli-2class"
        blas = [pool for pool in threadpool_info() if pool["user_api"] == "blas"]
        assert blas and all(pool["num_threads"] == 1 for pool in blas)
        assert gc.get_freeze_count() > 10_000  # start-up's objects are out of the collector's sight
    finally:
        gc.unfreeze()


def test_a_cuda_host_runs_several_processes_on_the_device_a_cpu_host_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.engine.onnx import run_defaults

    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert run_defaults(load_settings(), cuda=True).worker_processes == 4
    assert run_defaults(load_settings(), cuda=False).worker_processes == 1  # a CPU host's default is unchanged
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert run_defaults(load_settings(), cuda=True).worker_processes == 1  # two cores per process at least
    assert run_defaults(load_settings(worker_processes=3), cuda=True).worker_processes == 3  # explicit wins


def test_processes_sharing_a_device_count_in_the_visibility_arithmetic(monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.engine.onnx import run_defaults
    from worker.errors import ConfigError
    from worker.process.runtime import between_runs_allowance_s, policies, slowest_pairs_per_s

    monkeypatch.setattr("os.cpu_count", lambda: 16)
    settings = load_settings(visibility_timeout_s=30)
    shared = run_defaults(settings, cuda=True)
    assert slowest_pairs_per_s(shared) == 125  # 500 pairs/s shared by 4 processes
    with pytest.raises(ConfigError, match="one of 4 processes sharing the device"):
        policies(settings, shared)  # 4,096 pairs at 125 pairs/s: 33 s, over a 30 s timeout
    alone = replace(shared, worker_processes=1)
    bulk = policies(settings, alone)[1]
    assert between_runs_allowance_s(settings, alone, bulk) == pytest.approx((30 - 0.2 - 4096 / 500) / 2)


def test_cuda_sessions_grow_their_arena_by_what_they_ask_and_stop_at_the_limit() -> None:
    from worker.engine.onnx import CPU, CUDA, SessionSpec, provider_options

    assert provider_options([CPU], SessionSpec()) == [CPU]
    assert provider_options([CUDA, CPU], SessionSpec()) == [(CUDA, {"arena_extend_strategy": "kSameAsRequested"}), CPU]
    limited = provider_options([CUDA, CPU], SessionSpec(cuda_mem_limit_mb=2048))
    assert limited[0] == (CUDA, {"arena_extend_strategy": "kSameAsRequested", "gpu_mem_limit": str(2048 * 1024**2)})


def test_run_defaults_follow_the_device_unless_set(models_dir: Path) -> None:
    import onnxruntime as ort

    from worker.engine.onnx import CUDA, run_defaults

    unset = load_settings()
    assert run_defaults(unset, cuda=False) == RunDefaults(
        cuda=False,
        prefer_quantized=True,
        max_pairs_per_run=16,
        token_budget=256,
        bulk_max_pairs=1024,
        slowest_pairs_per_s=20,
    )
    on_cuda = RunDefaults(
        cuda=True,
        prefer_quantized=False,
        max_pairs_per_run=256,
        token_budget=65536,
        bulk_max_pairs=4096,
        slowest_pairs_per_s=500,
        worker_processes=min(4, max(1, (os.cpu_count() or 1) // 2)),
    )
    assert run_defaults(unset, cuda=True) == on_cuda
    explicit = load_settings(prefer_quantized=True, max_pairs_per_run=32, token_budget=4096, bulk_max_pairs=2000)
    assert run_defaults(explicit, cuda=True) == replace(  # each explicit setting wins; the speed floor is the device's
        on_cuda, prefer_quantized=True, max_pairs_per_run=32, token_budget=4096, bulk_max_pairs=2000
    )
    assert run_defaults(unset).cuda == (CUDA in ort.get_available_providers())
    assert run_defaults(load_settings(providers=("CPUExecutionProvider",))).cuda is False
    # on this CPU machine an unset LABELQ_PREFER_QUANTIZED loads the int8 file
    engine = Engine(load_settings(models_dir=models_dir, providers=("CPUExecutionProvider",)))
    assert engine.classifier("test/nli-2class").card.quantized


def test_a_session_that_falls_back_to_the_cpu_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    import onnxruntime as ort

    from tests.conftest import MODELS
    from worker.engine import onnx

    if onnx.CUDA in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider: no fallback to provoke")
    monkeypatch.setattr(onnx, "choose_providers", lambda requested: [onnx.CUDA, onnx.CPU])  # CUDA asked for
    with (
        caplog.at_level(logging.INFO, logger="worker.engine.onnx"),
        pytest.warns(UserWarning, match="CUDAExecutionProvider' is not in available provider names"),
    ):
        model = onnx.OnnxModel(MODELS / "nli-2class" / "onnx" / "model.onnx", onnx.SessionSpec())
    assert model.providers == [onnx.CPU]
    assert "runs on CPUExecutionProvider, not CUDAExecutionProvider" in caplog.text
    assert "on CPUExecutionProvider" in caplog.text


def test_batch_mates_sharing_a_label_list_keep_their_own_thresholds(settings: Settings) -> None:
    """The engine works out a label list's names and thresholds once per batch (its requests share one tuple),
    keyed by the list and the request's global threshold; a per-label map is the request's own."""
    engine = Engine(settings.model_copy(update={"model": FAKE_MODEL}), classifiers={FAKE_MODEL: FakeClassifier()})
    labels = ["refund", "bug"]
    batch = [
        parsed("refund my money", labels),
        parsed("refund it", labels, thresholds=0.99),
        parsed("refund now", labels, thresholds={"bug": 0.0}),
    ]
    assert batch[0].request.labels is batch[1].request.labels  # what the engine keys on
    plain, strict, mapped = engine.classify(batch)
    assert isinstance(plain, ClassificationResult) and isinstance(strict, ClassificationResult)
    assert isinstance(mapped, ClassificationResult)
    assert {s.label: s.threshold for s in plain.labels} == {"refund": 0.5, "bug": 0.5}
    assert {s.label: s.threshold for s in strict.labels} == {"refund": 0.99, "bug": 0.99}
    assert {s.label: s.threshold for s in mapped.labels} == {"refund": 0.5, "bug": 0.0}
    assert plain.accepted == ("refund",) and strict.accepted == () and mapped.accepted == ("refund", "bug")
