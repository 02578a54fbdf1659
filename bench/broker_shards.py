"""Redis CPU per message across N Redis servers: does a fleet of N servers cost the same per message as one?

N private redis-servers on this machine (N = 1, 2, 3); one `labelq worker` serving them all (LABELQ_REDIS_SHARDS:
a worker process for each server) on the fake model (`LABELQ_ENABLE_FAKE_MODEL=1 LABELQ_MODEL=fake`: the model
costs nothing, what is left is the Redis work); `Client([urls]).submit_many` sends M 5-label requests onto
`labelq.bulk`, spread by id, while the workers consume. The window runs from the first send until every queue and
every in-flight ledger is empty (polled every 0.1 s; every request's result is checked by id on its home server
afterwards). Redis's own `used_cpu_user + used_cpu_sys` (`INFO cpu`), summed over the servers, over M: the Redis CPU
a message costs end to end (produced, claimed, answered, acked), with each idle worker's own Redis CPU (measured
for 3 s before, per server) reported beside and included, as bench/broker_cost.py does. Rounds interleave N
(1, 2, 3, 1, 2, 3, ...); medians of the rounds. Redis counts CPU in 10 ms ticks: M messages resolve to 10 ms / M.

    python bench/broker_shards.py          # 20,000 messages, 3 rounds each N: bench/reports/broker-shards.json
    python bench/broker_shards.py --quick  # 500 messages, 1 round: prints (writes only with --report)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from bench import ways  # noqa: E402
from bench.broker_cost import FAKE, backlog, redis_cpu_s, redis_version  # noqa: E402
from labelq.local_redis import RedisServer, find_redis_server  # noqa: E402
from producer import Client  # noqa: E402
from schemas.servers import home_server  # noqa: E402
from schemas.transport import INFLIGHT_KEY, QUEUE_BULK, RESULT_KEY, priority_lists  # noqa: E402

REPORT = ROOT / "bench" / "reports" / "broker-shards.json"
MESSAGES = 20_000
ROUNDS = 3
FLEETS = (1, 2, 3)
IDLE_S = 3.0
POLL_S = 0.1


def cpu_s(clients: Sequence[redis.Redis]) -> list[float]:
    return [redis_cpu_s(client) for client in clients]


def drained(clients: Sequence[redis.Redis]) -> bool:
    """No request waiting on any server's bulk queue (its priority lists too), none in any in-flight ledger."""
    for client in clients:
        pipe = client.pipeline(transaction=False)
        for key in priority_lists(QUEUE_BULK):
            pipe.llen(key)
        pipe.hlen(INFLIGHT_KEY)
        if any(pipe.execute()):
            return False
    return True


def missing(clients: Sequence[redis.Redis], ids: Sequence[str]) -> int:
    """How many of `ids` have no result by id on their home server."""
    absent = 0
    for index, client in enumerate(clients):
        mine = [request_id for request_id in ids if home_server(request_id, len(clients)) == index]
        pipe = client.pipeline(transaction=False)
        for request_id in mine:
            pipe.exists(RESULT_KEY + request_id)
        absent += sum(1 for found in pipe.execute() if not found)
    return absent


def one_round(servers: Sequence[RedisServer], count: int, label: str, workdir: Path) -> dict[str, Any]:
    urls = [server.url for server in servers]
    clients = [redis.Redis.from_url(url) for url in urls]
    try:
        for client in clients:
            client.flushall()
        env = {**FAKE, "LABELQ_REDIS_SHARDS": ",".join(urls) if len(urls) > 1 else ""}
        worker = ways.start_worker(urls[0], env, workdir / f"worker-{label}.log")
        try:
            with Client(urls) as producer:
                if not producer.wait_for_workers(60, count=len(urls)):
                    raise RuntimeError(f"{len(urls)} servers: not every server's worker came up")
                producer.submit_many(backlog(len(urls) * 4, f"warm-{label}"), queue="bulk")  # connections, declares
                while not drained(clients):
                    time.sleep(POLL_S)
                before = cpu_s(clients)
                time.sleep(IDLE_S)
                idle_per_s = [(after - start) / IDLE_S for start, after in zip(before, cpu_s(clients), strict=True)]
                requests = backlog(count, f"m-{label}")
                started_cpu, started = cpu_s(clients), time.perf_counter()
                sent = producer.submit_many(requests, queue="bulk")
                deadline = time.monotonic() + 600
                while not drained(clients):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{len(urls)} servers: not drained in 600 s")
                    time.sleep(POLL_S)
                wall_s = time.perf_counter() - started
                spent = [after - start for start, after in zip(started_cpu, cpu_s(clients), strict=True)]
            lost = missing(clients, sent)
            if lost or len(sent) != count:
                raise RuntimeError(f"{len(urls)} servers: {lost} of {count} requests have no result")
        finally:
            worker.stop()
    finally:
        for client in clients:
            client.close()
    total_us = sum(spent) / count * 1e6
    return {
        "servers": len(urls),
        "redis_cpu_us": round(total_us, 2),
        "idle_share_us": round(sum(idle_per_s) * wall_s / count * 1e6, 2),
        "by_server_us": [round(s / count * 1e6, 2) for s in spent],
        "messages_by_server": [
            sum(1 for request_id in sent if home_server(request_id, len(urls)) == index) for index in range(len(urls))
        ],
        "wall_s": round(wall_s, 2),
        "messages_per_s": round(count / wall_s),
    }


def summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for n in FLEETS:
        mine = [r for r in rounds if r["servers"] == n]
        if not mine:
            continue
        out[str(n)] = {
            "redis_cpu_us": round(statistics.median(r["redis_cpu_us"] for r in mine), 2),
            "redis_cpu_us_range": [min(r["redis_cpu_us"] for r in mine), max(r["redis_cpu_us"] for r in mine)],
            "idle_share_us": round(statistics.median(r["idle_share_us"] for r in mine), 2),
            "redis_cpu_us_less_idle": round(statistics.median(r["redis_cpu_us"] - r["idle_share_us"] for r in mine), 2),
            "messages_per_s": round(statistics.median(r["messages_per_s"] for r in mine)),
        }
    base = out.get("1", {})
    for figures in out.values():
        if base:
            figures["over_one_server"] = round(figures["redis_cpu_us"] / base["redis_cpu_us"], 2)
            figures["over_one_server_less_idle"] = round(
                figures["redis_cpu_us_less_idle"] / base["redis_cpu_us_less_idle"], 2
            )
    return out


def main(argv: Sequence[str] | None = None, progress: Callable[[str], None] = print) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 messages, one round (a check that it runs)")
    parser.add_argument("--messages", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--report", type=Path, default=None, help="where to write (default: the committed report)")
    args = parser.parse_args(argv)
    count = args.messages or (500 if args.quick else MESSAGES)
    rounds = args.rounds or (1 if args.quick else ROUNDS)
    target = args.report or (None if args.quick else REPORT)
    binary = find_redis_server()
    assert binary is not None, "no redis-server: pip install -e '.[test]'"
    servers = [RedisServer(binary).start() for _ in range(max(FLEETS))]
    found: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="labelq-broker-shards-") as workdir:
            for index in range(rounds):
                for n in FLEETS:
                    found.append(one_round(servers[:n], count, f"{index}-{n}", Path(workdir)))
                    progress(
                        f"round {index + 1}, {n} server(s): {found[-1]['redis_cpu_us']} us/msg "
                        f"(by server {found[-1]['by_server_us']}), {found[-1]['messages_per_s']} msg/s"
                    )
    finally:
        for server in servers:
            server.close()
    from bench.harness import machine

    report: dict[str, Any] = {
        "machine": machine(),
        "redis_server": redis_version(binary),
        "messages": count,
        "rounds": rounds,
        "labels": 5,
        "queue": QUEUE_BULK,
        "by_servers": summary(found),
        "rounds_raw": found,
    }
    if target is not None:
        target.write_text(json.dumps(report, indent=2) + "\n")
        progress(f"wrote {target}")
    progress(f"{'servers':<9}{'Redis CPU us/msg (sum)':>23}{'less idle':>11}{'of one server':>15}{'msg/s':>8}")
    for n, f in report["by_servers"].items():
        progress(
            f"{n:<9}{f['redis_cpu_us']:>23}{f['redis_cpu_us_less_idle']:>11}{f.get('over_one_server', 1.0):>15}"
            f"{f['messages_per_s']:>8}"
        )
    return report


if __name__ == "__main__":
    main()
