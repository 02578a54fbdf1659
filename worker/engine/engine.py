"""The engine: parsed requests in, results out, no queue. Loads each model once and keeps it warm.

A failure never takes batch-mates down: a request naming an unknown model gets its own `unknown_model`
error; if a model run fails, the group is retried one request at a time so only the culprit gets an
`internal_error`.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from schemas import ClassificationResult, ClassifyRequest, ErrorCode, ErrorResult, ParsedRequest, parse_request
from schemas.result import single_error
from worker import tracing
from worker.engine.classifier import Classifier
from worker.engine.embedding import EmbeddingClassifier
from worker.engine.fake import FAKE_MODEL, FakeClassifier
from worker.engine.gate import RunGate
from worker.engine.heads import LinearHead
from worker.engine.models import ModelCard, ModelRegistry, describe_directory
from worker.engine.nli import NliClassifier
from worker.engine.onnx import OnnxModel, RunDefaults, SessionSpec, run_defaults
from worker.engine.result_cache import ResultCache, cache_key
from worker.engine.results import Answer, Answered, LabelColumns, Scored, build_answer, label_columns
from worker.engine.shortlist import Shortlisted, shortlist, shortlist_size, unchanged
from worker.errors import ModelError, ModelNotFound, RequestRejected
from worker.settings import Settings

log = logging.getLogger(__name__)

MB = 1024 * 1024
Outcome = ClassificationResult | ErrorResult  # validated, for in-process callers


def load_classifier(card: ModelCard, settings: Settings, runs: RunDefaults, gate: RunGate | None = None) -> Classifier:
    model = OnnxModel(card.onnx_path, SessionSpec.from_settings(settings), gate)
    if card.kind == "nli":
        return NliClassifier(card, model, token_budget=runs.token_budget, max_pairs_per_run=runs.max_pairs_per_run)
    return EmbeddingClassifier(
        card,
        model,
        token_budget=runs.token_budget,
        max_pairs_per_run=runs.max_pairs_per_run,
        cache_size=settings.embedding_cache_size,
        cache_bytes=settings.embedding_cache_mb * MB,
        temperature=settings.embedding_temperature,
        center=settings.embedding_center,
        scale=settings.embedding_scale,
    )


def error_for(request: ClassifyRequest, code: ErrorCode, message: str, field: str | None = None) -> ErrorResult:
    """An ErrorResult answering `request` (its id and metadata echoed)."""
    return single_error(request.id, code, message, field, request.metadata)


def check_model(settings: Settings) -> None:
    """The worker's model is installed and laid out as a model (`ModelNotFound` / `ModelLayoutError` otherwise):
    read from its directory, nothing loaded, so a worker refuses a wrong LABELQ_MODEL before it starts."""
    if settings.model == FAKE_MODEL and settings.enable_fake_model:
        return
    try:
        ModelRegistry(settings.models_dir).card(settings.model)
    except ModelNotFound as exc:  # a request's error code elsewhere; here the worker's own model is missing
        raise ModelError(
            f"{exc}; install it (labelq models pull, or a directory under LABELQ_MODELS_DIR) or set LABELQ_MODEL"
        ) from None


class Engine:
    """Warm classifiers by model name. `allow_paths` (the local CLI only) also accepts a model directory path."""

    def __init__(
        self,
        settings: Settings,
        registry: ModelRegistry | None = None,
        *,
        allow_paths: bool = False,
        classifiers: Mapping[str, Classifier] | None = None,
    ) -> None:
        self.settings = settings
        self.runs = run_defaults(settings)
        self.registry = registry or ModelRegistry(settings.models_dir, prefer_quantized=self.runs.prefer_quantized)
        self.allow_paths = allow_paths
        self._classifiers: dict[str, Classifier] = dict(classifiers or {})  # already-warm ones (fakes in tests)
        self._kinds: dict[str, str] = {}  # model name -> kind, for `cost` (read from its card, not loaded)
        self.cache = ResultCache(settings.result_cache_size, settings.result_cache_mb * MB)
        self._refused_heads: set[tuple[str, str]] = set()  # (head digest, model): logged once each
        self.gate = RunGate()  # passed before every model run: the worker lets realtime work through there

    def classifier(self, name: str | None = None) -> Classifier:
        """The warm classifier for a model name (the default model when None); loads it on first use."""
        name = name or self.settings.model
        if name not in self._classifiers and name == FAKE_MODEL and self.settings.enable_fake_model:
            # drills and reliability tests of everything but the model (its runs can be given a duration)
            self._classifiers[name] = FakeClassifier(
                run_ms=self.settings.fake_model_run_ms, run_size=self.runs.max_pairs_per_run, gate=self.gate
            )
        if name not in self._classifiers:
            started = time.perf_counter()
            self._classifiers[name] = load_classifier(self._card(name), self.settings, self.runs, self.gate)
            log.info("loaded model %s in %.0f ms", name, (time.perf_counter() - started) * 1000)
        return self._classifiers[name]

    def cost(self, request: ClassifyRequest) -> int:
        """Model sequences the request will run, what a batch's pair budget counts: one per (text, label) pair
        for an NLI model (k when the request is shortlisted); for an embedding model one for the text and one per
        label or example text not cached yet. A request whose model cannot be named costs its label count (it
        fails anyway). Known before any model work: the stream refuses a request that costs more than a batch."""
        name = request.model or self.settings.model
        kind = self._kinds.get(name)
        if kind is None:
            loaded = self._classifiers.get(name)
            try:
                kind = loaded.card.kind if loaded else self._card(name).kind
            except (RequestRejected, ModelError):
                return max(1, len(request.labels))
            self._kinds[name] = kind
        if kind == "embedding":  # the text, and the label and example texts not embedded yet
            loaded = self._classifiers.get(name)
            if loaded is None:  # not loaded yet: nothing is cached
                return 1 + len(request.labels) + sum(len(label.examples) for label in request.labels)
            return 1 + loaded.new_texts(request) if isinstance(loaded, EmbeddingClassifier) else 1
        # a request naming a label set gets its labels later, in the batch: it counts one until then
        return shortlist_size(request, self.settings.shortlist_k) or max(1, len(request.labels))

    def _card(self, name: str) -> ModelCard:
        if self.allow_paths and Path(name).is_dir():
            return describe_directory(Path(name), prefer_quantized=self.runs.prefer_quantized)
        return self.registry.card(name)

    def classify(
        self, batch: Sequence[ParsedRequest], heads: Sequence[LinearHead | None] | None = None
    ) -> list[Outcome]:
        """One validated outcome per parsed request, in order (`answer`, each answer validated). Never raises for
        a request's sake."""
        return [item.result() if isinstance(item, Answer) else item for item in self.answer(batch, heads)]

    def classify_raw(self, messages: Sequence[str | bytes]) -> list[Outcome]:
        """One outcome per wire message (request JSON), in order: parsed with this engine's limits, a message
        that does not parse answered by its `ErrorResult`."""
        parsed = [parse_request(message, self.settings.limits()) for message in messages]
        classified = iter(self.classify([item for item in parsed if not isinstance(item, ErrorResult)]))
        return [item if isinstance(item, ErrorResult) else next(classified) for item in parsed]

    def answer(
        self, batch: Sequence[ParsedRequest], heads: Sequence[LinearHead | None] | None = None
    ) -> list[Answered]:
        """One outcome per parsed request, in order, as the worker publishes it. Never raises for a request's sake.
        `heads`: per request, its label set's learned head (or None); a head that does not belong to the model
        scoring the request is not used: the request is scored zero-shot and its result says why."""
        groups: dict[str, list[int]] = defaultdict(list)
        for index, parsed in enumerate(batch):
            groups[parsed.request.model or self.settings.model].append(index)
        scored: dict[int, tuple[Scored, ModelCard, Shortlisted] | ErrorResult] = {}
        classifiers: dict[str, Classifier] = {}
        for name, indices in groups.items():
            try:
                classifiers[name] = self.classifier(name)
            except RequestRejected as exc:
                scored.update({i: error_for(batch[i].request, exc.code, exc.message, exc.field) for i in indices})
            except ModelError as exc:
                log.error("model %s cannot be loaded: %s", name, exc)
                message = f"model {name!r} cannot be loaded on this worker"
                scored.update(
                    {i: error_for(batch[i].request, ErrorCode.INTERNAL_ERROR, message, "model") for i in indices}
                )
        notes: dict[int, str] = {}  # requests whose label set's head could not score them: why
        by_head: set[int] = set()
        started = time.perf_counter()  # after loading: batch time is model time, not start-up time
        for name, classifier in classifiers.items():
            indices = groups[name]
            headed: list[tuple[int, LinearHead]] = []
            for i in indices:
                head = heads[i] if heads else None
                if head is None:
                    continue
                note = self._head_problem(head, classifier, batch[i].request)
                if note is None:
                    headed.append((i, head))
                else:
                    notes[i] = note
            if headed and isinstance(classifier, EmbeddingClassifier):
                requests = [batch[i].request for i, _ in headed]
                outcomes = self._score_cached(classifier, requests, [head for _, head in headed])
                for (i, _), request, item in zip(headed, requests, outcomes, strict=True):
                    scored[i] = (
                        item if isinstance(item, ErrorResult) else (item, classifier.card, Shortlisted(request, None))
                    )
                    by_head.add(i)
                indices = [i for i in indices if i not in by_head]
            if not indices:  # every request of this model was scored by its head
                continue
            picked = self._shortlist(classifier, [batch[i].request for i in indices])
            outcomes = self._score_cached(classifier, [p.request for p in picked])
            for i, p, item in zip(indices, picked, outcomes, strict=True):
                scored[i] = item if isinstance(item, ErrorResult) else (item, classifier.card, p)
        batch_ms = (time.perf_counter() - started) * 1000
        columns: dict[tuple[int, float | None], LabelColumns] = {}  # by label list: batch-mates share theirs
        results: list[Answered] = []
        for i, parsed in enumerate(self.gate.paced(batch)):
            done = scored[i]
            if isinstance(done, ErrorResult):
                results.append(done)
                continue
            item, card, kept = done
            request = kept.request
            if isinstance(request.thresholds, dict):
                shared = label_columns(request)
            else:  # keyed by identity: every request of the batch is alive, so no id is reused meanwhile
                key = (id(request.labels), request.thresholds)
                shared = columns.get(key) or columns.setdefault(key, label_columns(request))
            answer = build_answer(
                request,
                item,
                card,
                batch_ms=batch_ms,
                text_truncated=parsed.truncated,
                shortlist=kept.shortlist,
                columns=shared,
            )
            if i in by_head or i in notes:
                answer = replace(answer, scorer="head" if i in by_head else "zero-shot", scorer_note=notes.get(i))
            results.append(answer)
        return results

    def _head_problem(self, head: LinearHead, classifier: Classifier, request: ClassifyRequest) -> str | None:
        """Why `head` cannot score `request` on `classifier` (logged once per head and model), or None."""
        problem = head.mismatch(classifier.card)
        if problem is None and not isinstance(classifier, EmbeddingClassifier):
            problem = f"this worker's model {classifier.card.name} cannot serve a learned head"
        if problem is None and head.labels != tuple(label.name for label in request.labels):
            problem = "its head was fitted on other labels than the set's"
        if problem is None and head.multi_label != request.multi_label:
            mode = "multi-label" if head.multi_label else "single-label"
            problem = f"its head was fitted {mode}; the request asks otherwise"
        if problem is None:
            return None
        note = f"label set {request.label_set!r} scored zero-shot: {problem}"
        if (head.digest, classifier.card.name) not in self._refused_heads:
            self._refused_heads.add((head.digest, classifier.card.name))
            log.warning("%s", note)
        return note

    def ranker(self) -> Classifier:
        """The shortlist's embedding model, warm; `ModelError` if it is not an embedding model (a worker
        with `shortlist_k` set calls this at start-up, so a misconfiguration stops it there)."""
        ranker = self.classifier(self.settings.shortlist_model)
        if ranker.card.kind != "embedding":
            raise ModelError(f"shortlist model {ranker.card.name} is not an embedding model ({ranker.card.kind})")
        return ranker

    def _shortlist(self, classifier: Classifier, requests: list[ClassifyRequest]) -> list[Shortlisted]:
        """NLI requests with more labels than their k keep the embedding model's top k. If the shortlist
        model cannot be used, every label is scored (slower, never wrong) and the error is logged."""
        k = self.settings.shortlist_k
        if classifier.card.kind != "nli" or not any(shortlist_size(r, k) for r in requests):
            return unchanged(requests)
        try:
            return shortlist(self.ranker(), requests, k)
        except Exception:  # a broken ranker costs speed, not answers
            log.exception("shortlist model %s unusable: scoring every label", self.settings.shortlist_model)
            return unchanged(requests)

    def _score_cached(
        self, classifier: Classifier, requests: list[ClassifyRequest], heads: list[LinearHead] | None = None
    ) -> list[Scored | ErrorResult]:
        """Scores from the result cache where it has them; the model runs only on the rest. `heads`: each
        request's learned head, when heads score them (an embedding classifier's)."""
        if self.cache.size <= 0:
            return self._score_isolated(classifier, requests, heads)
        keys = [
            cache_key(classifier.card, request, heads[i].digest if heads else None)
            for i, request in enumerate(requests)
        ]
        found: list[Scored | ErrorResult | None] = [self.cache.get(key) for key in keys]
        missing = [i for i, item in enumerate(found) if item is None]
        missing_heads = [heads[i] for i in missing] if heads else None
        scored = self._score_isolated(classifier, [requests[i] for i in missing], missing_heads) if missing else []
        for i, item in zip(missing, scored, strict=True):
            found[i] = item
            if isinstance(item, Scored):
                self.cache.put(keys[i], requests[i], item)
        return [item for item in found if item is not None]

    def _score_isolated(
        self, classifier: Classifier, requests: list[ClassifyRequest], heads: list[LinearHead] | None = None
    ) -> list[Scored | ErrorResult]:
        """Score a group; if the run fails, retry one by one so only the request that breaks it fails."""
        try:
            with tracing.model_run(classifier.card.name, len(requests), sum(len(r.labels) for r in requests)) as span:
                if heads is not None and isinstance(classifier, EmbeddingClassifier):
                    return list(classifier.score_heads(requests, heads))
                scored: list[Scored | ErrorResult] = list(classifier.score(requests))
                tracing.ran(span, getattr(classifier, "last_plan", None))
                return scored
        except Exception as exc:  # onnxruntime and tokenizers raise untyped errors; isolate, never propagate
            if len(requests) > 1:
                return [
                    self._score_isolated(classifier, [request], [heads[i]] if heads else None)[0]
                    for i, request in enumerate(requests)
                ]
            log.exception("model run failed for request %s", requests[0].id)
            return [error_for(requests[0], ErrorCode.INTERNAL_ERROR, f"model run failed: {type(exc).__name__}")]
