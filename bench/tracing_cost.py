"""What OpenTelemetry tracing costs a worker: the code before tracing, this code with tracing off, and with it on.

Three arms, interleaved in one run (A B C A B C ...), each a fresh `labelq worker` on the embedded default model
(no LABELQ_MODEL) behind a private redis-server:
- before: the commit before tracing (995970b~1), checked out in a git worktree and run from there;
- off: this code, no `OTEL_*` variable;
- on: this code, `OTEL_EXPORTER_OTLP_ENDPOINT` at an OTLP/HTTP receiver in this process (answers 200 to
  `POST /v1/traces`, keeps the bodies and counts their spans once the worker has gone), so the SDK's export is
  real and the receiver cheap.
In each: a few warm-up requests, then a bulk backlog of N requests with 5 labels sent by `Client.submit_many` on
`labelq.bulk` (throughput = N / seconds from the first submit to the last result read; and the worker process's
CPU time in that window, all its threads, per request: the figure a machine shared with other work disturbs
least), then a paced realtime stream (Poisson arrivals; latency = result read - submitted_at, p50/p99). Medians
over the repetitions, and each arm's best round's throughput. Last, the hooks alone in this process (CPU a
request, batches of 1 and of 10), against the worker's CPU a request with tracing off. The bench process itself
sends untraced (no `OTEL_*` here), so only the worker's cost is measured.

    python bench/tracing_cost.py            # full run (~5-10 min on 2 cores); writes bench/reports/tracing-cost.json
    python bench/tracing_cost.py --quick    # a small run, to a temporary report
"""

from __future__ import annotations

import argparse
import gzip
import http.server
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import ways  # noqa: E402
from bench.harness import machine  # noqa: E402
from bench.workload import label_names, requests, texts  # noqa: E402
from labelq.local_redis import RedisServer, find_redis_server  # noqa: E402
from producer import Client  # noqa: E402
from schemas.result import TRACE_ID_KEY  # noqa: E402

REPORT = ROOT / "bench" / "reports" / "tracing-cost.json"
BEFORE = "995970b~1"  # the commit before tracing (995970b added worker/tracing.py)
BEFORE_DIR = Path("/tmp/labelq-before")  # `git worktree add /tmp/labelq-before 995970b~1`
ARMS = ("before", "off", "on")
LABELS = 5
WARM = 8
FULL: dict[str, Any] = {"requests": 1200, "realtime": 150, "rate_per_s": 25.0, "repetitions": 5}
QUICK: dict[str, Any] = {"requests": 150, "realtime": 30, "rate_per_s": 25.0, "repetitions": 1}
TRACES_PATH = "/v1/traces"


def cpu_s(pid: int) -> float:
    """A process's CPU seconds so far, user + system, all its threads (the exporter's included): /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Receiver:
    """An OTLP/HTTP trace receiver: answers 200 to each POST /v1/traces and keeps the bodies (parsed later, out
    of the timed windows)."""

    def __init__(self) -> None:
        bodies: list[bytes] = []
        self.bodies = bodies

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path == TRACES_PATH:
                    bodies.append(body)
                self.send_response(200 if self.path == TRACES_PATH else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def take(self) -> tuple[int, Counter[str]]:
        """The exports received since the last take, and their spans by name."""
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        bodies, self.bodies[:] = list(self.bodies), []
        names: Counter[str] = Counter()
        for body in bodies:
            message = ExportTraceServiceRequest()
            message.ParseFromString(body)
            for resource in message.resource_spans:
                for scope in resource.scope_spans:
                    names.update(span.name for span in scope.spans)
        return len(bodies), names

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def hooks_cpu_us(endpoint: str, batch: int, count: int = 3000) -> float:
    """CPU microseconds a request that the worker's tracing hooks cost, in this process, out of any worker: the
    spans of `count` requests in batches of `batch` (request spans, the batch span linked both ways, its model-run
    and result-write children, the ids for the result's metadata), exported by the SDK's batch processor over
    OTLP/HTTP to the receiver (flushed at the end); process CPU time, so the exporter's and receiver's threads
    count too (an upper bound on the worker's share)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from worker.tracing import Tracing

    provider = TracerProvider()
    exporter = OTLPSpanExporter(endpoint=endpoint + TRACES_PATH)
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=4 * count))  # none dropped: all exported
    tracing = Tracing(provider.get_tracer("bench"))
    started = time.process_time()
    for _ in range(0, count, batch):
        spans = [tracing.start_request({}, time.time(), "labelq.bulk") for _ in range(batch)]
        with tracing.batch("labelq.bulk", spans) as span:
            for request in spans[1:]:
                tracing.link(request, span)
            with tracing.model_run("minilm-l6-int8", batch, batch * LABELS):
                pass
            with tracing.result_write(batch):
                metadata = [tracing.ids(request) for request in spans]
        for request, ids in zip(spans, metadata, strict=True):
            request.set_attributes(
                {"labelq.outcome": "ok", "labelq.queue_wait_ms": 1.0, "labelq.scorer": ids[TRACE_ID_KEY][:4]}
            )
            request.end()
    provider.shutdown()
    return (time.process_time() - started) / count * 1e6


def check_before_checkout(code_dir: Path) -> None:
    """The `before` worker must import that checkout's code, not this one's (the editable install)."""
    if not (code_dir / "worker").is_dir():
        raise SystemExit(f"no checkout at {code_dir}: git worktree add {code_dir} {BEFORE}")
    if (code_dir / "worker" / "tracing.py").exists():
        raise SystemExit(f"{code_dir} already has worker/tracing.py: check it out at {BEFORE}")
    found = subprocess.run(
        [sys.executable, "-c", "import worker.stream.pipeline as m; print(m.__file__)"],
        cwd=code_dir,
        env={"PYTHONPATH": str(code_dir), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not Path(found).resolve().is_relative_to(code_dir.resolve()):
        raise SystemExit(f"the before worker would import {found}, not {code_dir}'s code")


def one_round(
    url: str, arm: str, rep: int, sizes: dict[str, Any], receiver: Receiver, workdir: Path, before_dir: Path
) -> dict[str, Any]:
    env: dict[str, str] = {}
    code_dir: Path | None = None
    if arm == "before":
        code_dir = before_dir
    elif arm == "on":
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.endpoint
    labels = label_names(LABELS)
    count, realtime = sizes["requests"], sizes["realtime"]
    bulk = requests(texts(count), labels, f"bulk-{arm}-{rep}", "bench:bulk")
    paced = requests(texts(realtime, count + WARM), labels, f"rt-{arm}-{rep}", "bench:rt")
    receiver.take()
    worker = ways.start_worker(url, env, workdir / f"worker-{arm}-{rep}.log", code_dir=code_dir)
    try:
        with Client(url) as client:
            warm = requests(texts(WARM, count), labels, f"warm-{arm}-{rep}", "bench:warm")
            client.submit_many(warm, queue="bulk")
            first = [ways.pop(client, "bench:warm", within_s=120) for _ in warm]
            if None in first:
                raise RuntimeError(f"{arm}: warm-up results did not come")
            traced = TRACE_ID_KEY in json.loads(first[0] or b"{}").get("metadata", {})
            if traced != (arm == "on"):
                raise RuntimeError(f"{arm}: a result {'has' if traced else 'lacks'} a trace id")
            cpu_started, started = cpu_s(worker.process.pid), time.perf_counter()
            client.submit_many(bulk, queue="bulk")
            read = 0
            while read < count:
                drained: list[bytes] = list(client.redis.lpop("bench:bulk", 1000) or [])  # type: ignore[arg-type]
                if not drained:
                    raw = ways.pop(client, "bench:bulk", within_s=300)
                    if raw is None:
                        raise RuntimeError(f"{arm}: bulk results stopped arriving")
                    drained = [raw]
                for item in drained:
                    if b'"status":"ok"' not in item:
                        raise RuntimeError(f"{arm}: a request failed: {item[:300]!r}")
                read += len(drained)
            bulk_s, bulk_cpu_s = time.perf_counter() - started, cpu_s(worker.process.pid) - cpu_started
        latencies, _ = ways.open_loop(url, paced, sizes["rate_per_s"], seed=rep)
        if len(latencies) != realtime:
            raise RuntimeError(f"{arm}: {len(latencies)} of {realtime} realtime results")
    finally:
        worker.stop()  # a clean exit: the SDK exports the spans it still holds
    exports, spans = receiver.take()
    figures: dict[str, Any] = {
        "bulk_requests_per_s": round(count / bulk_s, 1),
        "bulk_worker_cpu_ms_per_request": round(1000 * bulk_cpu_s / count, 3),
        "realtime_p50_ms": round(ways.percentile(latencies, 50), 1),
        "realtime_p99_ms": round(ways.percentile(latencies, 99), 1),
    }
    if arm == "on":
        sent = WARM + count + realtime
        figures.update(
            exports=exports, spans=dict(sorted(spans.items())), spans_per_request=round(sum(spans.values()) / sent, 3)
        )
    return figures


def main(argv: Sequence[str] | None = None, progress: Callable[[str], None] = print) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small run (one repetition), to a temporary report")
    parser.add_argument("--before-dir", type=Path, default=BEFORE_DIR, help=f"a checkout of {BEFORE}")
    parser.add_argument("--report", type=Path, default=None)
    args = parser.parse_args(argv)
    sizes = dict(QUICK if args.quick else FULL)
    report_path = args.report or (Path(tempfile.gettempdir()) / "tracing-cost.json" if args.quick else REPORT)
    check_before_checkout(args.before_dir)
    binary = find_redis_server()
    assert binary is not None, "no redis-server: pip install -e '.[test]'"
    workdir = Path(tempfile.mkdtemp(prefix="labelq-bench-tracing-"))
    rounds: dict[str, list[dict[str, Any]]] = {arm: [] for arm in ARMS}
    receiver = Receiver()
    server = RedisServer(binary).start()
    started, load_before = time.monotonic(), os.getloadavg()
    try:
        for rep in range(sizes["repetitions"]):
            for arm in ARMS:
                with Client(server.url) as client:
                    client.redis.flushdb()  # the private server's, never another's
                figures = one_round(server.url, arm, rep, sizes, receiver, workdir, args.before_dir)
                rounds[arm].append(figures)
                progress(f"rep {rep} {arm:<7}" + " ".join(f"{k}={v}" for k, v in figures.items() if k != "spans"))
        hooks = {
            f"batch_of_{batch}": round(min(hooks_cpu_us(receiver.endpoint, batch) for _ in range(3)), 1)
            for batch in (1, 10)
        }
        receiver.take()
    finally:
        server.close()
        receiver.close()
    keys = ("bulk_requests_per_s", "bulk_worker_cpu_ms_per_request", "realtime_p50_ms", "realtime_p99_ms")
    median: dict[str, dict[str, float]] = {
        arm: {key: round(statistics.median(r[key] for r in rounds[arm]), 3) for key in keys} for arm in ARMS
    }
    for arm in ARMS:  # the least disturbed round: on a shared machine, the closest to the worker's own pace
        median[arm]["best_bulk_requests_per_s"] = max(r["bulk_requests_per_s"] for r in rounds[arm])
    median["on"]["spans_per_request"] = round(statistics.median(r["spans_per_request"] for r in rounds["on"]), 3)

    def ratio(key: str, arm: str, base: str) -> float:
        return round(median[arm][key] / median[base][key], 3)

    ratios = {
        f"{arm} / {base} {what}": ratio(key, arm, base)
        for arm, base in (("off", "before"), ("on", "off"))
        for what, key in (
            ("throughput (medians)", "bulk_requests_per_s"),
            ("throughput (best rounds)", "best_bulk_requests_per_s"),
            ("worker CPU a request", "bulk_worker_cpu_ms_per_request"),
        )
    }

    def head(cwd: Path) -> str:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=cwd, capture_output=True, text=True
        ).stdout.strip()

    report: dict[str, Any] = {
        "machine": machine(),
        "before": f"{BEFORE} ({head(args.before_dir)})",
        "this": head(ROOT),
        "model": "the embedded default (no LABELQ_MODEL)",
        "labels": LABELS,
        **sizes,
        "wall_s": round(time.monotonic() - started, 1),
        "load_average_1_5_15_min": {
            "start": [round(x, 2) for x in load_before],
            "end": [round(x, 2) for x in os.getloadavg()],
        },
        "median": median,
        "hooks_cpu_us_per_request_in_process": hooks,
        "hooks / off worker CPU a request (best round), batches of 10": round(
            hooks["batch_of_10"] / 1000 / min(r["bulk_worker_cpu_ms_per_request"] for r in rounds["off"]), 4
        ),
        "ratios": ratios,
        "rounds": rounds,
    }
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    progress(json.dumps({"median": median, "ratios": report["ratios"]}, indent=1))
    progress(f"wrote {report_path}")
    return report


if __name__ == "__main__":
    main()
