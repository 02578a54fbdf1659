"""Throughput and latency through Redis and Celery against the engine in-process, on the same requests.

    python bench/streaming.py [--models minilm-l6-int8 deberta-int8 deberta-fp32] [--out docs/benchmarks.md]

For each model, in one run on one machine:
- engine in-process: the requests classified in batches of the bulk batch size (what a worker does), texts/s;
- end to end: the same requests submitted to `labelq.bulk` on a private redis-server, one `labelq worker`
  process (same threads), texts/s from the first submit to the last result read back;
- latency from enqueue (`submitted_at`) to the result read back by a client, p50/p99, under an open-loop
  Poisson load of 10% and 90% of the measured end-to-end capacity, on `labelq.realtime`.
Requests: routing-style texts of 8-40 words, 5 labels. The DeBERTa models are the architecture-faithful
random-weight seed-sized model from `tools/make_test_models.py --full-size bench/models/deberta-v3-xsmall-random`.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from labelq.local_redis import RedisServer, find_redis_server  # noqa: E402
from producer import Client  # noqa: E402
from schemas import ClassifyRequest, ParsedRequest, parse_result  # noqa: E402
from worker.engine import Engine  # noqa: E402
from worker.settings import load_settings  # noqa: E402

LABELS = ["billing", "technical problem", "account access", "delivery", "praise"]
WORDS = tuple(
    [
        "my",
        "card",
        "was",
        "charged",
        "twice",
        "and",
        "the",
        "app",
        "keeps",
        "crashing",
        "when",
        "I",
        "try",
        "to",
        "log",
        "in",
        "so",
        "I",
        "cannot",
        "see",
        "where",
        "my",
        "parcel",
        "is",
        "and",
        "support",
        "has",
        "not",
        "answered",
        "for",
        "days",
        "which",
        "is",
        "really",
        "frustrating",
        "honestly",
    ]
)
MODELS = {
    "minilm-l6-int8": {"LABELQ_MODEL": "minilm-l6-int8"},
    "deberta-int8": {"LABELQ_MODEL": "deberta-v3-xsmall-random", "LABELQ_PREFER_QUANTIZED": "true"},
    "deberta-fp32": {"LABELQ_MODEL": "deberta-v3-xsmall-random", "LABELQ_PREFER_QUANTIZED": "false"},
}
MODELS_DIR = ROOT / "bench" / "models"


def texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 40))) + f" #{i}" for i in range(n)]


def make_requests(n: int, seed: int, reply_to: str) -> list[ClassifyRequest]:
    return [
        ClassifyRequest(id=f"b{seed}-{i}", text=t, labels=LABELS, reply_to=reply_to)  # type: ignore[arg-type]
        for i, t in enumerate(texts(n, seed))
    ]


def env_for(model: str, threads: int) -> dict[str, str]:
    return {"LABELQ_MODELS_DIR": str(MODELS_DIR), "LABELQ_INTRA_OP_THREADS": str(threads), **MODELS[model]}


@dataclass
class Row:
    model: str
    n: int
    engine_tps: float
    e2e_tps: float
    latency: dict[str, tuple[float, float, float, int]]  # load -> (offered req/s, p50 ms, p99 ms, n)


def engine_throughput(model: str, n: int, threads: int, batch: int) -> float:
    os.environ.update(env_for(model, threads))
    engine = Engine(load_settings())
    engine.classify([ParsedRequest(r) for r in make_requests(batch, 99, "x")])  # warm
    requests = [ParsedRequest(r) for r in make_requests(n, 1, "x")]
    started = time.perf_counter()
    for i in range(0, n, batch):
        engine.classify(requests[i : i + batch])
    return n / (time.perf_counter() - started)


def start_worker(url: str, model: str, threads: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **env_for(model, threads), "LABELQ_REDIS_URL": url}
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "labelq.cli", "worker", "--loglevel", "WARNING", "--hostname", "bench@%h"],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    with Client(url) as client:
        if not client.wait_for_workers(180):
            raise RuntimeError(log.read_text()[-2000:])
    return process


def e2e_throughput(client: Client, n: int) -> float:
    requests = make_requests(n, 2, "bench:tp")
    started = time.perf_counter()
    client.submit_many(requests, queue="bulk")
    for _ in range(n):
        if pop(client, "bench:tp", within_s=300) is None:
            raise RuntimeError("results stopped arriving")
    return n / (time.perf_counter() - started)


def pop(client: Client, queue: str, within_s: float) -> bytes | None:
    """BLPOP in short rounds (redis-py's default socket timeout is 5 s)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        popped = client.redis.blpop([queue], timeout=2)
        if popped is not None:
            return popped[1]  # type: ignore[no-any-return]
    return None


def open_loop_latency(
    url: str, client: Client, rate_per_s: float, duration_s: float, seed: int
) -> tuple[float, float, int]:
    """Poisson arrivals at `rate_per_s` on the realtime queue; latency = result read back - submitted_at."""
    rng = random.Random(seed)
    count = max(20, int(rate_per_s * duration_s))
    requests = make_requests(count, seed, f"bench:lat{seed}")
    latencies: list[float] = []
    done = threading.Event()

    def collect() -> None:
        reader = Client(url)
        while len(latencies) < count:
            popped = pop(reader, f"bench:lat{seed}", within_s=60)
            if popped is None:
                break
            now = time.time()
            result = parse_result(popped)
            sent = sent_at[str(result.id)]
            latencies.append((now - sent) * 1000)
        reader.close()
        done.set()

    sent_at: dict[str, float] = {}
    thread = threading.Thread(target=collect, daemon=True)
    thread.start()
    next_at = time.monotonic()
    for request in requests:
        next_at += rng.expovariate(rate_per_s)
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        prepared = client.prepare(request)
        sent_at[request.id] = prepared.submitted_at.timestamp()  # type: ignore[union-attr]
        client.submit(prepared, queue="realtime")
    done.wait(timeout=300)
    latencies.sort()
    return _percentile(latencies, 50), _percentile(latencies, 99), len(latencies)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    index = min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))
    return values[index]


def single_request_ms(model: str, threads: int) -> float:
    """The model's own time for one 5-label request run alone in-process (median of 20)."""
    os.environ.update(env_for(model, threads))
    engine = Engine(load_settings())
    requests = [ParsedRequest(r) for r in make_requests(21, 5, "x")]
    engine.classify(requests[:1])
    times = []
    for request in requests[1:]:
        started = time.perf_counter()
        engine.classify([request])
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "reports" / "streaming.md")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply request counts and durations")
    args = parser.parse_args()
    binary = find_redis_server()
    assert binary, "no redis-server"
    lines = [
        "# Through Redis and Celery vs in-process",
        "",
        f"`python bench/streaming.py` on {time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; one worker process with {args.threads} onnxruntime threads and the "
        f"engine in-process with the same threads; 5 labels per request, texts of 8-40 words; bulk batches "
        "for throughput, the realtime queue for latency. Latency: from `submitted_at` to the result read back by "
        "a client (BLPOP on the result queue), under open-loop Poisson arrivals.",
        "",
        "| model | requests | engine in-process, texts/s | through Redis + Celery, texts/s | ratio | "
        "model alone, 1 request, ms | p50 / p99 at 10% load, ms | p50 / p99 at 90% load, ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model in args.models:
        if model != "minilm-l6-int8" and not (MODELS_DIR / "deberta-v3-xsmall-random").is_dir():
            print(f"skip {model}: run tools/make_test_models.py --full-size bench/models/deberta-v3-xsmall-random")
            continue
        settings = load_settings()
        n = int((600 if model == "minilm-l6-int8" else 60) * args.scale)
        engine_tps = engine_throughput(model, n, args.threads, settings.bulk_batch_size)
        alone_ms = single_request_ms(model, args.threads)
        server = RedisServer(binary).start()
        log = Path(f"/tmp/labelq-bench-{model}.log")
        worker = start_worker(server.url, model, args.threads, log)
        try:
            with Client(server.url) as client:
                e2e_tps = e2e_throughput(client, n)
                duration = 20.0 * args.scale
                low = open_loop_latency(server.url, client, 0.1 * e2e_tps, duration, seed=10)
                high = open_loop_latency(server.url, client, 0.9 * e2e_tps, duration, seed=90)
        finally:
            worker.terminate()
            worker.wait(timeout=30)
            server.close()
        lines.append(
            f"| {model} | {n} | {engine_tps:.1f} | {e2e_tps:.1f} | {e2e_tps / engine_tps:.2f} | {alone_ms:.1f} | "
            f"{low[0]:.0f} / {low[1]:.0f} (n={low[2]}, {0.1 * e2e_tps:.1f} req/s) | "
            f"{high[0]:.0f} / {high[1]:.0f} (n={high[2]}, {0.9 * e2e_tps:.1f} req/s) |"
        )
        print(lines[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
