"""The broker's share: Redis CPU and Redis commands per message, phase by phase, measured from Redis itself.

A private redis-server; `Client.submit_many` sends N 5-label requests (banking77 texts); one `labelq worker` on
the fake model (`LABELQ_ENABLE_FAKE_MODEL=1 LABELQ_MODEL=fake`: the model costs nothing, so what is left is the
worker's Redis work). Around each phase Redis's own `used_cpu_user + used_cpu_sys` (`INFO cpu`) and its
`INFO commandstats` (reset with `CONFIG RESETSTAT` first), per message:

- producing: `submit_many` onto `labelq.bulk` (no worker running), once for each backlog a run consumes;
  *producing, one round trip a message*: the same requests sent one `send_task` at a time, as `submit_many` did
  before it pipelined (`Client._send`, kept for this A/B), onto a side list;
- consuming `labelq.bulk`, the Celery result backend on (the default: result by id and Celery's meta);
- consuming `labelq.bulk`, the backend off (`LABELQ_RESULT_BACKEND=disabled`);
- consuming `labelq.realtime` (backend on).

A backlog is produced, renamed aside, and renamed onto its queue (one RENAME) once a ready worker idles, so the
consuming window holds the worker's work alone; it ends when the queue and labelq's in-flight ledger are empty
(polled every 0.1 s; the polls are taken off the command counts), and every request's result is checked after
the window. The idle worker's own Redis CPU (watchers' blocking waits, Celery's heartbeats) is measured for 3 s
before each worker's first phase and reported beside (*idle share*: that rate over the phase's seconds, per
message); the headline figures include it, as a deployment pays it. Medians of the runs; Redis CPU is counted in
10 ms ticks by the kernel, so a phase of N messages resolves to 10 ms / N.

    python bench/broker_cost.py             # 20,000 messages a phase, 3 runs: writes bench/reports/broker-cost.json
    python bench/broker_cost.py --quick     # 300 messages, 1 run: prints (writes only with --report)
    git worktree add /tmp/before <rev> && python bench/broker_cost.py --baseline /tmp/before
                                            # each consuming phase also on <rev>'s worker, in the same runs
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
from bench.workload import DATA, label_names, texts  # noqa: E402
from labelq.local_redis import RedisServer, find_redis_server  # noqa: E402
from producer import Client  # noqa: E402
from schemas import ClassifyRequest  # noqa: E402
from schemas.transport import QUEUE_BULK, QUEUE_REALTIME, RESULT_KEY  # noqa: E402
from worker.stream.redis_queue import INFLIGHT_KEY, ReliableQueue  # noqa: E402

REPORT = ROOT / "bench" / "reports" / "broker-cost.json"
MESSAGES = 20_000
RUNS = 3
LABELS = 5
IDLE_S = 3.0  # the idle worker's own Redis CPU is measured over this long
POLL_S = 0.1  # how often the end of a consuming phase is looked for
LEGACY_LIST = "bench.legacy"  # the one-round-trip-a-message sends go here (no worker reads it)
FAKE = {"LABELQ_ENABLE_FAKE_MODEL": "1", "LABELQ_MODEL": "fake"}
BACKEND_OFF = {"LABELQ_RESULT_BACKEND": "disabled"}

# phase name -> what the report and docs call it
PHASES = {
    "producing": "producing, `submit_many`",
    "producing_one_by_one": "producing, one round trip a message (`send_task` each)",
    "bulk": "consuming `labelq.bulk` (result by id + Celery result backend)",
    "bulk_no_backend": "consuming `labelq.bulk`, result backend off",
    "realtime": "consuming `labelq.realtime` (result by id + Celery result backend)",
}
CONSUMING = ("bulk", "bulk_no_backend", "realtime")
BEFORE = "_before"  # a consuming phase on the baseline checkout's worker (--baseline)
OWN_COMMANDS = ("info", "config|resetstat", "config")  # the bench's own reading of the counters


def redis_cpu_s(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def command_calls(client: redis.Redis) -> dict[str, int]:
    """`INFO commandstats` as {command: calls} (script-called commands counted under their own names)."""
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(entry["calls"]) for name, entry in stats.items()}


class Window:
    """Redis CPU seconds, wall seconds and commands between `open` and `close`, less the bench's own commands."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.own: dict[str, int] = {}  # commands the bench itself sent inside the window (its polls)
        self.cpu_s = self.wall_s = 0.0
        self.commands: dict[str, int] = {}

    def open(self) -> Window:
        self.client.config_resetstat()
        self._cpu, self._wall = redis_cpu_s(self.client), time.perf_counter()
        return self

    def close(self) -> Window:
        self.wall_s = time.perf_counter() - self._wall
        self.cpu_s = redis_cpu_s(self.client) - self._cpu
        calls = command_calls(self.client)
        for name, count in self.own.items():
            calls[name] = calls.get(name, 0) - count
        self.commands = {name: n for name, n in calls.items() if n > 0 and name not in OWN_COMMANDS}
        return self


def figures(window: Window, messages: int, idle_cpu_per_s: float | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "redis_cpu_us": window.cpu_s / messages * 1e6,
        "wall_us": window.wall_s / messages * 1e6,
        "commands": sum(window.commands.values()) / messages,
        "by_command": {name: n / messages for name, n in sorted(window.commands.items(), key=lambda kv: -kv[1])},
    }
    if idle_cpu_per_s is not None:
        out["idle_share_us"] = idle_cpu_per_s * window.wall_s / messages * 1e6
    return out


# where the shared banking77 set is absent (a clean clone in CI): texts of its typical length, its first labels
STAND_IN_TEXTS = [f"I was charged twice for my card payment number {i}, can you refund one of them?" for i in range(50)]
STAND_IN_LABELS = ["activate my card", "age limit", "apple pay or google pay", "atm support", "automatic top up"]


def backlog(count: int, prefix: str) -> list[ClassifyRequest]:
    """`count` 5-label requests on banking77 texts (cycled: the fake model answers in no time either way), or on
    stand-ins of the same length where ../shared/data is not there."""
    if (DATA / "banking77.jsonl").exists():
        corpus, labels = texts(min(count, 3000)), label_names(LABELS)
    else:
        corpus, labels = STAND_IN_TEXTS, STAND_IN_LABELS[:LABELS]
    return [ClassifyRequest(id=f"{prefix}-{i}", text=corpus[i % len(corpus)], labels=labels) for i in range(count)]


def produce(client: Client, requests: Sequence[ClassifyRequest], queue: str) -> Window:
    """`submit_many` onto `queue` (nothing consumes it now), inside a window."""
    window = Window(client.redis).open()
    ids = client.submit_many(requests, queue=queue)
    window.close()
    assert ids == [request.id for request in requests]
    return window


def produce_one_by_one(client: Client, requests: Sequence[ClassifyRequest]) -> Window:
    """The same messages sent one `send_task` (one LPUSH round trip) each onto a side list, inside a window."""
    window = Window(client.redis).open()
    with client._celery.producer_or_acquire() as producer:
        for request in requests:
            client._send(client.prepare(request), LEGACY_LIST, producer)
    window.close()
    assert client.redis.llen(LEGACY_LIST) == len(requests)
    client.redis.delete(LEGACY_LIST)
    return window


def aside(phase: str) -> str:
    """Where a phase's backlog waits, produced, until its worker is ready."""
    return f"bench.aside.{phase}"


def consume(client: Client, staged: str, queue: str, ids: Sequence[str]) -> Window:
    """Rename the backlog `staged` onto `queue` (a ready worker idles), and wait until the queue and the ledger are
    empty; every request must have its result by id."""
    lists = ReliableQueue(client.redis).lists(queue)
    window = Window(client.redis).open()
    client.redis.rename(staged, queue)
    polls = 0
    deadline = time.monotonic() + 600
    while True:
        time.sleep(POLL_S)
        pipe = client.redis.pipeline(transaction=False)
        for key in lists:
            pipe.llen(key)
        pipe.hlen(INFLIGHT_KEY)
        polls += 1
        if not any(pipe.execute()):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"{queue}: not drained in 600 s")
    window.own = {"llen": polls * len(lists), "hlen": polls, "rename": 1}
    window.close()
    missing = answered(client, ids)
    if missing:
        raise RuntimeError(f"{queue}: {missing} of {len(ids)} requests have no result")
    return window


def answered(client: Client, ids: Sequence[str]) -> int:
    """How many of `ids` have no result by id."""
    missing = 0
    for start in range(0, len(ids), 1000):
        pipe = client.redis.pipeline(transaction=False)
        for request_id in ids[start : start + 1000]:
            pipe.exists(RESULT_KEY + request_id)
        missing += sum(1 for found in pipe.execute() if not found)
    return missing


def idle(client: Client) -> float:
    """The idle worker's Redis CPU, seconds a second."""
    window = Window(client.redis).open()
    time.sleep(IDLE_S)
    window.close()
    return window.cpu_s / window.wall_s


def one_run(url: str, count: int, run: int, workdir: Path, baseline: Path | None = None) -> dict[str, Any]:
    """Every phase once; with `baseline` (another checkout), each consuming phase also on a worker running that
    checkout's code, on its own copy of the backlog, in turn with this code (which goes first alternates by run)."""
    found: dict[str, Any] = {}
    codes: list[tuple[Path | None, str]] = [(None, "")]
    if baseline is not None:
        codes = [(None, ""), (baseline, BEFORE)] if run % 2 == 0 else [(baseline, BEFORE), (None, "")]
    with Client(url) as client:
        client.redis.flushall()
        backlogs = {
            phase + suffix: (queue, backlog(count, f"{prefix}{run}{suffix}"))
            for _, suffix in codes
            for phase, queue, prefix in (
                ("bulk", QUEUE_BULK, "b"),
                ("realtime", QUEUE_REALTIME, "r"),
                ("bulk_no_backend", QUEUE_BULK, "o"),
            )
        }
        client.submit({"text": "warm up", "labels": ["a", "b"]}, queue=QUEUE_BULK)  # connection and declaration
        client.redis.delete(QUEUE_BULK)
        producing: list[dict[str, Any]] = []
        for phase, (queue, requests) in backlogs.items():
            producing.append(figures(produce(client, requests, queue), count))
            client.redis.rename(queue, aside(phase))
        found["producing"] = producing
        found["producing_one_by_one"] = [figures(produce_one_by_one(client, backlogs["bulk"][1]), count)]
        ways_to_run = [
            (code, env, tuple(phase + suffix for phase in phases))
            for code, suffix in codes
            for env, phases in ((FAKE, ("bulk", "realtime")), ({**FAKE, **BACKEND_OFF}, ("bulk_no_backend",)))
        ]
        for code, env, phases in ways_to_run:
            worker = ways.start_worker(url, env, workdir / f"worker-{run}-{phases[0]}.log", code_dir=code)
            try:
                idle_cpu = idle(client)
                for phase in phases:
                    queue, requests = backlogs[phase]
                    window = consume(client, aside(phase), queue, [request.id for request in requests])
                    found[phase] = [figures(window, count, idle_cpu)]
                    found.setdefault("idle_redis_cpu_ms_per_s", {})[phase] = round(idle_cpu * 1000, 3)
            finally:
                worker.stop()
    return found


def median_of(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over the samples (a command's per message: the median of its counts)."""
    keys = [key for key in samples[0] if key != "by_command"]
    out: dict[str, Any] = {key: round(statistics.median(s[key] for s in samples), 2) for key in keys}
    out["redis_cpu_us_range"] = [
        round(min(s["redis_cpu_us"] for s in samples), 2),
        round(max(s["redis_cpu_us"] for s in samples), 2),
    ]
    names = {name for s in samples for name in s["by_command"]}
    by_command = {name: statistics.median(s["by_command"].get(name, 0.0) for s in samples) for name in names}
    out["by_command"] = {
        name: round(n, 3) for name, n in sorted(by_command.items(), key=lambda kv: -kv[1]) if n >= 0.0005
    }
    out["commands"] = round(statistics.median(s["commands"] for s in samples), 3)
    return out


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    names = [name for name in (*PHASES, *(p + BEFORE for p in CONSUMING)) if name in runs[0]]
    phases = {phase: median_of([sample for run in runs for sample in run[phase]]) for phase in names}
    end_to_end = phases["producing"]["redis_cpu_us"] + phases["bulk"]["redis_cpu_us"]
    out = {
        "phases": phases,
        "end_to_end_bulk_us": round(end_to_end, 2),
        "messages_per_s_one_redis_core": round(1e6 / end_to_end),
    }
    if "bulk" + BEFORE in phases:  # the same producer, the baseline's consume side
        before = phases["producing"]["redis_cpu_us"] + phases["bulk" + BEFORE]["redis_cpu_us"]
        out["messages_per_s_one_redis_core_before"] = round(1e6 / before)
    return out


def baseline_name(baseline: Path | None) -> str | None:
    """The baseline checkout's commit, for the report (None without one)."""
    if baseline is None:
        return None
    import subprocess

    out = subprocess.run(["git", "-C", str(baseline), "log", "-1", "--format=%h"], capture_output=True, text=True)
    return out.stdout.strip() or str(baseline)


def redis_version(binary: str) -> str:
    import subprocess

    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False).stdout
    return next((part.split("=", 1)[1] for part in out.split() if part.startswith("v=")), out.strip())


def main(argv: Sequence[str] | None = None, progress: Callable[[str], None] = print) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 messages a phase, one run (a check that it runs)")
    parser.add_argument("--messages", type=int, default=None)
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument(
        "--report",
        type=Path,
        default=None,
        help=f"where to write (default {REPORT.relative_to(ROOT)}; --quick: nowhere)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="another checkout (git worktree add /tmp/before <rev>): each consuming phase also on its worker's code",
    )
    args = parser.parse_args(argv)
    count = args.messages or (300 if args.quick else MESSAGES)
    rounds = args.runs or (1 if args.quick else RUNS)
    target = args.report or (None if args.quick else REPORT)
    binary = find_redis_server()
    assert binary is not None, "no redis-server: pip install -e '.[test]'"
    server = RedisServer(binary).start()
    runs = []
    try:
        with tempfile.TemporaryDirectory(prefix="labelq-broker-cost-") as workdir:
            for run in range(rounds):
                runs.append(one_run(server.url, count, run, Path(workdir), args.baseline))
                progress(
                    f"run {run + 1} of {rounds}: "
                    + ", ".join(
                        f"{phase} {statistics.median(s['redis_cpu_us'] for s in samples):.1f} us"
                        for phase, samples in runs[-1].items()
                        if isinstance(samples, list)
                    )
                )
    finally:
        server.close()
    from bench.harness import machine

    report = {
        "machine": machine(),
        "redis_server": redis_version(binary),
        "messages": count,
        "runs": rounds,
        "labels": LABELS,
        "phase_names": PHASES,
        "baseline": baseline_name(args.baseline),
        **summary(runs),
        "runs_raw": runs,
    }
    if target is not None:
        target.write_text(json.dumps(report, indent=2) + "\n")
        progress(f"wrote {target}")
    progress(f"{'phase':<24}{'Redis CPU us/msg':>18}{'commands/msg':>14}")
    for phase, values in report["phases"].items():
        progress(f"{phase:<24}{values['redis_cpu_us']:>18}{values['commands']:>14}")
    progress(f"one Redis core, produce + consume bulk: {report['messages_per_s_one_redis_core']:,} messages/s")
    return report


if __name__ == "__main__":
    main()
