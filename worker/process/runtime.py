"""What a worker process holds while it runs: settings, the warm engine, Redis, the pipeline, batch policies."""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass

from schemas import ClassifyRequest, ParsedRequest, RequestLimits
from schemas.transport import QUEUE_BULK, QUEUE_REALTIME
from worker import metrics
from worker.connections import connect
from worker.delivery.egress import EgressPolicy, EgressRefused
from worker.delivery.webhook_jobs import DEFAULT_SECRET
from worker.engine.engine import Engine
from worker.engine.onnx import RunDefaults
from worker.errors import ConfigError
from worker.settings import Settings
from worker.stream.batcher import BatchPolicy
from worker.stream.labelsets import LabelSetStore
from worker.stream.pipeline import Pipeline, WebhookGuard
from worker.stream.publishing import Publisher, ResultBackend

log = logging.getLogger(__name__)

WARM_UP_TEXT = "labelq warm-up: the model runs once before the first message."


def warm_up(engine: Engine, settings: Settings) -> None:
    """Run the default model before the first message on the shapes it will see: a short pair and a full run
    of pairs at the model's length limit, so onnxruntime has grown its memory arena before a request waits."""
    long_text = " ".join([WARM_UP_TEXT] * 60)  # past any model's limit: cut to it, as a long request would be
    labels = [f"warm-up {i}" for i in range(engine.runs.max_pairs_per_run)]
    per_request = min(settings.max_labels, RequestLimits().max_labels)  # a bigger run takes several requests
    engine.answer(
        [
            ParsedRequest(ClassifyRequest(text=WARM_UP_TEXT, labels=("a", "b"))),
            *(
                ParsedRequest(ClassifyRequest(text=long_text, labels=labels[i : i + per_request]))
                for i in range(0, len(labels), per_request)
            ),
        ]
    )


def freeze_heap() -> None:
    """Move everything alive after start-up (modules, schemas, the model's Python side) out of the garbage
    collector's sight: its full collections otherwise rescan ~170,000 objects while results are built
    (MiniLM on 77 labels: engine / raw 0.70 -> 0.75 in docs/benchmarks.md). Call once, after warm-up."""
    gc.collect()
    gc.freeze()


def policies(settings: Settings, runs: RunDefaults) -> tuple[BatchPolicy, ...]:
    """The realtime and bulk batch policies; `ConfigError` when a full batch, waited for and run at this
    device's slowest credible speed, could outlive the visibility timeout (Redis would hand its messages to
    another worker while this one still holds them: duplicates, never loss, but wasted work)."""
    chosen = (
        BatchPolicy(
            QUEUE_REALTIME,
            settings.realtime_batch_size,
            settings.realtime_max_pairs,
            settings.realtime_max_wait_ms / 1000,
        ),
        BatchPolicy(QUEUE_BULK, settings.bulk_batch_size, runs.bulk_max_pairs, settings.bulk_max_wait_ms / 1000),
    )
    for policy in chosen:
        name = policy.queue.removeprefix("labelq.")
        speed = slowest_pairs_per_s(runs)
        worst_s = policy.max_wait_s + policy.max_pairs / speed
        if worst_s >= settings.visibility_timeout_s:
            shared = f", one of {runs.worker_processes} processes sharing the device" if runs.cuda else ""
            raise ConfigError(
                f"{name}: max wait {policy.max_wait_s:g} s + {policy.max_pairs} pairs at {speed:g} pairs/s (the "
                f"slowest expected {'on CUDA' if runs.cuda else 'on a CPU'}{shared}) = {worst_s:g} s, not under "
                f"LABELQ_VISIBILITY_TIMEOUT_S {settings.visibility_timeout_s}: lower LABELQ_{name.upper()}_MAX_PAIRS "
                "or raise the timeout"
            )
    return chosen


def slowest_pairs_per_s(runs: RunDefaults) -> float:
    """The slowest credible speed of one worker process: on CUDA its processes share one device, so each may get
    only its share of it (a CPU host's processes each have their own cores)."""
    return runs.slowest_pairs_per_s / (runs.worker_processes if runs.cuda else 1)


def between_runs_allowance_s(settings: Settings, runs: RunDefaults, bulk: BatchPolicy) -> float:
    """How much realtime work one bulk batch may take in between its model runs: half of what its worst case
    leaves of the visibility timeout, so a bulk batch interrupted by realtime traffic still ends (and acks)
    before Redis would hand its messages to another worker. Spent, realtime waits for the batch's end again."""
    worst_s = bulk.max_wait_s + bulk.max_pairs / slowest_pairs_per_s(runs)
    return max(0.0, (settings.visibility_timeout_s - worst_s) / 2)


def webhook_guard(settings: Settings) -> WebhookGuard:
    """Refuse, before inference, a webhook whose secret is not configured or whose URL fails the static egress
    check (IP literals, localhost, allowlist); names are resolved and checked again at delivery."""
    policy = EgressPolicy.from_settings(settings)

    def guard(request: ClassifyRequest) -> str | None:
        name = request.webhook_secret or DEFAULT_SECRET
        if name not in settings.webhook_secrets:
            return f"no webhook secret named {name!r} is configured on the workers"
        try:
            policy.check_static(request.webhook_url or "")
        except EgressRefused as exc:
            return f"{exc.reason}: {exc}"
        return None

    return guard


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    publisher: Publisher
    pipeline: Pipeline
    policies: tuple[BatchPolicy, ...]

    @classmethod
    def start(cls, settings: Settings) -> Runtime:
        started = time.perf_counter()
        engine = Engine(settings)
        batch_policies = policies(settings, engine.runs)  # before the model loads: a bad setting fails fast
        engine.classifier()  # load the default model now, in this process (after any fork)
        if settings.shortlist_k:
            engine.ranker()  # and the shortlist's ranker, so no request waits for it (or finds it unusable)
        warm_up(engine, settings)
        freeze_heap()
        load_s = time.perf_counter() - started
        metrics.MODEL_LOAD.labels(settings.model).set(load_s)
        log.info("model %s warm in %.0f ms", settings.model, load_s * 1000)
        client = connect(settings, health_check_interval=30)
        backend = ResultBackend(expires_s=settings.result_expires_s) if settings.results_on_broker else None
        publisher = Publisher(client, settings.result_ttl_s, backend)
        pipeline = Pipeline(
            engine,
            publisher,
            limits=settings.limits(),
            max_deliveries=settings.max_deliveries,
            webhook_guard=webhook_guard(settings),
            labelsets=LabelSetStore(client, settings.limits()),  # a set is held to the limits a request is
            budgets={policy.queue: policy.max_pairs for policy in batch_policies},
            log_texts=settings.log_texts,
        )
        return cls(settings, engine, publisher, pipeline, batch_policies)
