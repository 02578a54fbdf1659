"""Prometheus metrics of a worker host: one endpoint, however many worker processes.

`labelq worker` serves http://0.0.0.0:$LABELQ_METRICS_PORT/metrics when the port is set. With several processes
(`--processes N`) the parent serves the endpoint and the children write prometheus-client's multiprocess files
(PROMETHEUS_MULTIPROC_DIR, set by the parent), so the figures are summed over the processes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, Metric, start_http_server
from prometheus_client import multiprocess as prometheus_multiprocess
from prometheus_client.registry import Collector

from worker.errors import ConfigError

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

RECEIVED = Counter("labelq_requests_received_total", "Messages taken off a request queue", ["queue"])
RESULTS = Counter("labelq_results_total", "Outcomes published: ok, an error code, or dead_lettered", ["outcome"])
BATCH_SIZE = Histogram("labelq_batch_size", "Requests per flushed batch", ["queue"], buckets=SIZE_BUCKETS)
BATCH_PAIRS = Histogram(
    "labelq_batch_pairs",
    "Model sequences per flushed batch: (text, label) pairs on an NLI model; texts and uncached labels on an "
    "embedding model",
    ["queue"],
    buckets=SIZE_BUCKETS,
)
PADDING_RATIO = Histogram(
    "labelq_padding_ratio",
    "Padded tokens over real tokens per model run plan",
    buckets=(1.0, 1.05, 1.1, 1.25, 1.5, 2.0, 3.0),
)
QUEUE_WAIT = Histogram("labelq_queue_wait_seconds", "Enqueue to batch start", ["queue"], buckets=LATENCY_BUCKETS_S)
INFERENCE = Histogram("labelq_inference_seconds", "Model time per batch", ["queue"], buckets=LATENCY_BUCKETS_S)
END_TO_END = Histogram("labelq_end_to_end_seconds", "Enqueue to result written", ["queue"], buckets=LATENCY_BUCKETS_S)
RESULT_CACHE = Counter("labelq_result_cache_total", "Requests served from the result cache or not", ["outcome"])
WEBHOOK_ATTEMPTS = Counter("labelq_webhook_attempts_total", "Webhook delivery attempts", ["outcome"])
BETWEEN_RUNS = Counter(
    "labelq_realtime_between_runs_total",
    "Realtime batches served between the model runs of a bulk batch, or not (its allowance spent)",
    ["outcome"],
)
BETWEEN_RUNS_SECONDS = Counter(
    "labelq_realtime_between_runs_seconds_total",
    "Seconds bulk batches were paused to serve realtime work between their model runs: what realtime traffic "
    "takes from a backfill",
)
REDELIVERED = Counter(
    "labelq_redelivered_total",
    "In-flight messages the sweep handled: restored (put back after their claim expired), dead_lettered "
    "(put back too often, or a record it cannot restore), adopted (left in kombu's unacked hash by an earlier labelq)",
    ["outcome"],
)
# drift of taught and stored label sets, per set (and version): what share of results accept each label, and how
# each label's scores are spread (sets of at most DRIFT_MAX_LABELS labels: a score a label costs a few us)
DRIFT_MAX_LABELS = 16
SCORE_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
LABELSET_RESULTS = Counter(
    "labelq_labelset_results_total", "Results of requests naming a label set", ["label_set", "version", "scorer"]
)
LABELSET_ACCEPTED = Counter(
    "labelq_labelset_accepted_total",
    "Labels accepted (at or over their threshold) in results of a label set",
    ["label_set", "version", "label"],
)
LABELSET_SCORE = Histogram(
    "labelq_labelset_score",
    f"Each label's score in results of a label set of at most {DRIFT_MAX_LABELS} labels",
    ["label_set", "label"],
    buckets=SCORE_BUCKETS,
)
LABELSET_SHADOW = Counter(
    "labelq_labelset_shadow_total",
    "Results of a label set whose candidate runs in shadow: whether the candidate accepted the same labels",
    ["label_set", "agreement"],
)
LABELSET_CORRECTED = Counter(
    "labelq_labelset_corrected_total",
    "Corrections of a label set's results: whether the live version's decision (scorer=live) and its shadow's "
    "(scorer=shadow) accepted exactly the corrected labels",
    ["label_set", "scorer", "outcome"],
)
QUEUE_DEPTH = Gauge("labelq_queue_depth", "Messages waiting in a queue", ["queue"], multiprocess_mode="max")
PROCESS_RESTARTS = Counter(
    "labelq_worker_process_restarts_total",
    "Worker processes that exited unasked and were replaced (served by the parent of --processes N)",
    registry=None,  # the parent's own: registered on its endpoint beside the children's sums
)
PROCESS_RECYCLES = Counter(
    "labelq_worker_process_recycles_total",
    "Worker processes replaced after LABELQ_MAX_TASKS_PER_CHILD or LABELQ_MAX_MEMORY_PER_CHILD (by their parent)",
    registry=None,  # the parent's own, as restarts
)
MODEL_LOAD = Gauge("labelq_model_load_seconds", "Time to load and warm the model", ["model"], multiprocess_mode="max")


class _ChildrenCollector(Collector):
    """The children's multiprocess files, summed, less the parent's own counters: each child defines them too (at
    0, never counted), and a second family of the same name makes the scrape invalid (promtool: "second HELP line")
    and leaves Prometheus the children's 0, dropping the parent's count as a duplicate sample."""

    def __init__(self, path: str) -> None:
        self._children = prometheus_multiprocess.MultiProcessCollector(None, path=path)  # type: ignore[no-untyped-call]

    def collect(self) -> Iterable[Metric]:
        parents = {PROCESS_RESTARTS._name, PROCESS_RECYCLES._name}
        families: Iterable[Metric] = self._children.collect()  # type: ignore[no-untyped-call]
        return [family for family in families if family.name not in parents]


def serve(port: int, multiprocess_dir: str | None = None, servers: Collector | None = None) -> None:
    """Start the endpoint in a background thread (of the parent, with a multiprocess directory; `servers`: a
    fleet's servers, worker/process/servers.py). A port that cannot be bound (taken, or privileged) is a
    `ConfigError` naming the setting."""
    registry = REGISTRY
    if multiprocess_dir:
        registry = CollectorRegistry()
        registry.register(_ChildrenCollector(multiprocess_dir))
        registry.register(PROCESS_RESTARTS)
        registry.register(PROCESS_RECYCLES)
    if servers is not None:
        registry.register(servers)
    try:
        start_http_server(port, registry=registry)
    except OSError as exc:
        raise ConfigError(
            f"cannot serve metrics on port {port} (LABELQ_METRICS_PORT): {exc.strerror or exc}; "
            "choose a free port, or 0 for no metrics endpoint"
        ) from exc


def observe_batch(
    queue: str, requests: int, pairs: int, waits_s: Sequence[float], model_s: float, ends_s: Sequence[float]
) -> None:
    BATCH_SIZE.labels(queue).observe(requests)
    BATCH_PAIRS.labels(queue).observe(pairs)
    INFERENCE.labels(queue).observe(model_s)
    for wait in waits_s:
        QUEUE_WAIT.labels(queue).observe(wait)
    for end in ends_s:
        END_TO_END.labels(queue).observe(end)
