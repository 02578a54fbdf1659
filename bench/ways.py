"""The four ways of classifying the same requests, each returning the seconds it took (or latencies).

(a) `raw_feeds` + `run_seconds`: the onnxruntime session alone, on inputs tokenised, sorted and padded
    beforehand: nothing but `session.run` in the timed loop (the ceiling any server could reach with this
    model and threads);
(b) `hf_seconds`: transformers' `zero-shot-classification` pipeline (PyTorch), one text per call or a list
    with `batch_size`, the baseline a user would pick;
(c) `engine_seconds`: labelq's engine in-process (`Engine.answer`, as a worker runs it), in the batches a worker
    would cut; `in_process_round` times (a) and (c) run by run, side by side, for the engine / raw target;
(d) `e2e_seconds` / `open_loop`: a `labelq worker` process behind a private redis-server, requests submitted
    by the producer library and results read back from the reply queue.
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.workload import label_names, texts, worker_batches
from bench.workload import requests as make_requests
from labelq.processes import stop_process
from producer import Client
from producer.client import queue_name
from schemas import DEFAULT_TEMPLATE, ClassifyRequest, ParsedRequest
from worker.engine.batching import pad_run, plan_runs
from worker.engine.classifier import Classifier
from worker.engine.embedding import EmbeddingClassifier
from worker.engine.engine import Engine
from worker.engine.nli import NliClassifier
from worker.settings import Settings


def units(classifier: Classifier, requests: Sequence[ClassifyRequest]) -> int:
    """Model sequences the requests cost: one per (text, label) pair for NLI, one per text for embeddings."""
    if isinstance(classifier, NliClassifier):
        return sum(len(r.labels) for r in requests)
    return len({r.text for r in requests})


def raw_feeds(
    classifier: Classifier, requests: Sequence[ClassifyRequest], token_budget: int, max_items: int
) -> list[dict[str, Any]]:
    """The session's inputs for every run of the requests: tokenised, sorted by length, cut and padded."""
    if isinstance(classifier, NliClassifier):
        encoded = classifier.encoder.encode_pairs([pair for r in requests for pair in classifier.pairs(r)])
    elif isinstance(classifier, EmbeddingClassifier):
        encoded = classifier.encoder.encode_texts(list(dict.fromkeys(r.text for r in requests)))
    else:
        raise TypeError(type(classifier))
    model = classifier.model
    plan = plan_runs([len(e) for e in encoded], token_budget, max_items, model.static_sequence_length)
    feeds = []
    for run in plan.runs:
        padded = pad_run([encoded[i] for i in run], classifier.encoder.pad_id, model.static_sequence_length)
        feeds.append({name: array for name, array in padded.items() if name in model.input_names})
    return feeds


def run_seconds(classifier: Classifier, feeds: Sequence[dict[str, Any]]) -> float:
    """Time of `session.run` alone over `feeds`, nothing else in the timed loop."""
    assert isinstance(classifier, NliClassifier | EmbeddingClassifier)
    session, output = classifier.model.session, [classifier.model.output_name]
    started = time.perf_counter()
    for feed in feeds:
        session.run(output, feed)
    return time.perf_counter() - started


def _worker_batches(
    engine: Engine, requests: Sequence[ClassifyRequest], settings: Settings
) -> list[list[ParsedRequest]]:
    parsed = [ParsedRequest(r) for r in requests]
    return list(worker_batches(parsed, settings.bulk_batch_size, engine.runs.bulk_max_pairs, engine.cost))


def engine_seconds(engine: Engine, requests: Sequence[ClassifyRequest], settings: Settings) -> float:
    """The engine as a worker runs it (`Engine.answer`: scores, thresholds, ranking; JSON is the publisher's)."""
    batches = _worker_batches(engine, requests, settings)
    engine.answer(batches[0][:2])  # warm
    started = time.perf_counter()
    for batch in batches:
        engine.answer(batch)
    return time.perf_counter() - started


@dataclass(frozen=True)
class InProcess:
    """One round of the in-process ways over the same requests, in seconds: `raw` (the session alone on the
    whole set, sorted as one, at the best run size), `raw_batches` (the session alone on exactly the runs the
    engine made) and `engine` (`Engine.answer`, less the raw runs slotted into it)."""

    raw: float
    raw_batches: float
    engine: float


def _rows(feed: dict[str, Any]) -> int:
    return int(feed["input_ids"].shape[0])


class _Interleaved:
    """Stands in for the model's onnxruntime session while the engine answers, so that the three in-process
    ways run side by side, one model run apart: a slow spell of the machine (seconds long on a shared
    2-core VM) lands on all three alike. Each time the engine runs its model the run is made (its output goes
    back to the engine), made once more alone (`raw_batches`) and followed by the ceiling's next runs until the
    ceiling has run as many rows as the engine (`raw`); every other time in the reverse order. Time spent on
    the slotted runs is `inserted`, taken off the engine's wall time."""

    def __init__(self, session: Any, ceiling: Sequence[dict[str, Any]]) -> None:
        self.session, self.ceiling = session, list(ceiling)
        self.next = self.engine_rows = self.ceiling_rows = self.calls = 0
        self.raw = self.raw_batches = self.inserted = 0.0

    def _timed(self, names: Any, feed: dict[str, Any]) -> tuple[Any, float]:
        started = time.perf_counter()
        out = self.session.run(names, feed)
        return out, time.perf_counter() - started

    def catch_up(self, names: Any, rows: float) -> None:
        """The ceiling's next runs until it has run `rows` rows (or has none left)."""
        while self.next < len(self.ceiling) and self.ceiling_rows < rows:
            feed = self.ceiling[self.next]
            self.next += 1
            self.raw += self._timed(names, feed)[1]
            self.ceiling_rows += _rows(feed)

    def run(self, names: Any, feed: dict[str, Any], *args: Any) -> Any:
        entered = time.perf_counter()
        self.engine_rows += _rows(feed)
        self.calls += 1
        if self.calls % 2:
            out, own = self._timed(names, feed)
            self.raw_batches += self._timed(names, feed)[1]
            self.catch_up(names, self.engine_rows)
        else:
            self.catch_up(names, self.engine_rows)
            self.raw_batches += self._timed(names, feed)[1]
            out, own = self._timed(names, feed)
        self.inserted += time.perf_counter() - entered - own
        return out


def in_process_round(
    engine: Engine, requests: Sequence[ClassifyRequest], settings: Settings, best_run: int
) -> InProcess:
    """The three in-process ways over `requests`, run by run side by side (`_Interleaved`): the engine answers
    the batches a worker cuts, as a worker does; the ceiling's runs are the whole set sorted as one and cut
    at the sweep's best size."""
    classifier = engine.classifier()
    assert isinstance(classifier, NliClassifier | EmbeddingClassifier)
    model = classifier.model
    ceiling = raw_feeds(classifier, requests, engine.runs.token_budget, best_run)
    batches = _worker_batches(engine, requests, settings)
    engine.answer(batches[0][:2])  # warm
    session = model.session
    session.run([model.output_name], ceiling[-1])  # the ceiling's longest run: the arena grown to hold it
    slots = _Interleaved(session, ceiling)
    object.__setattr__(model, "_session", slots)  # the model's own session, wrapped for this round only
    try:
        started = time.perf_counter()
        for batch in batches:
            engine.answer(batch)
        wall = time.perf_counter() - started
        slots.catch_up([model.output_name], math.inf)  # any runs the ceiling has left
    finally:
        object.__setattr__(model, "_session", session)
    return InProcess(slots.raw, slots.raw_batches, wall - slots.inserted)


def hf_pipeline(model_dir: Path, threads: int, device: str = "cpu") -> Any:
    import torch
    from transformers import pipeline

    torch.set_num_threads(threads)
    return pipeline("zero-shot-classification", model=str(model_dir), device=device)


def hf_seconds(classifier: Any, texts: Sequence[str], labels: Sequence[str], batch_size: int | None) -> float:
    """One text per call (batch_size None: each pair its own forward pass, the pipeline's default) or the whole
    list with `batch_size` pairs per forward pass."""
    classifier(texts[0], candidate_labels=list(labels), hypothesis_template=DEFAULT_TEMPLATE)  # warm
    started = time.perf_counter()
    if batch_size is None:
        for text in texts:
            classifier(text, candidate_labels=list(labels), hypothesis_template=DEFAULT_TEMPLATE)
    else:
        classifier(
            list(texts), candidate_labels=list(labels), hypothesis_template=DEFAULT_TEMPLATE, batch_size=batch_size
        )
    return time.perf_counter() - started


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        stop_process(self.process, timeout_s=60)


def start_worker(url: str, env: dict[str, str], log: Path, processes: int = 1, code_dir: Path | None = None) -> Worker:
    """A `labelq worker` (`code_dir`: another checkout's code, for an A/B against it), once it is ready."""
    full_env = {**os.environ, **env, "LABELQ_REDIS_URL": url, "LABELQ_WORKER_PROCESSES": str(processes)}
    if code_dir is not None:
        full_env["PYTHONPATH"] = str(code_dir)
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "labelq.cli", "worker", "--loglevel", "WARNING", "--hostname", "bench@%h"],
            env=full_env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=code_dir,
        )
    with Client(url) as client:
        deadline = time.monotonic() + 300
        while not client.wait_for_workers(1, count=processes):
            if process.poll() is not None or time.monotonic() > deadline:  # died at start-up, or never came
                process.kill()
                raise RuntimeError(log.read_text()[-3000:])
    return Worker(process, log)


def pop(client: Client, queue: str, within_s: float) -> bytes | None:
    """BLPOP in short rounds (redis-py's default socket timeout is 5 s)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        popped = client.redis.blpop([queue], timeout=2)
        if popped is not None:
            return popped[1] if isinstance(popped[1], bytes) else str(popped[1]).encode()
    return None


def warm_worker(client: Client, prefix: str = "warm") -> None:
    """A few requests through a fresh worker before anything is timed."""
    e2e_seconds(client, make_requests(texts(8, 2000), label_names(5), prefix, "bench:tp"), "bulk")


def e2e_seconds(client: Client, requests: Sequence[ClassifyRequest], queue: str) -> float:
    """A backlog through the worker: the requests are staged in a side list and moved onto the queue in one
    RENAME, so the worker sees the whole backlog at once and the producer's own cost (on a real deployment, on
    another machine) is outside the timed window; timed from the RENAME to the last result read back."""
    stage_backlog(client, requests)
    return release_backlog(client, requests, queue)


STAGING = "bench.staging"


def stage_backlog(client: Client, requests: Sequence[ClassifyRequest]) -> None:
    """Send a backlog to a side list (`release_backlog` moves it onto its queue at once)."""
    assert requests[0].reply_to, "requests need a reply_to"
    client.redis.delete(STAGING)
    # stamped as having waited a second, as a real backlog has: the bulk batcher's fill-up wait (for a batch
    # not full yet) is for a trickle, not a backlog, and would otherwise add up to 200 ms to a small one
    waited = datetime.now(UTC) - timedelta(seconds=1)
    # a side list is no labelq queue, so `submit_many` refuses it: the messages are sent as it sends them
    with client._celery.producer_or_acquire() as producer:
        for request in requests:
            client._send(client.prepare(request.model_copy(update={"submitted_at": waited})), STAGING, producer)


def release_backlog(client: Client, requests: Sequence[ClassifyRequest], queue: str) -> float:
    """Move a staged backlog onto `queue` in one RENAME; seconds until its last result is read back."""
    reply, target = requests[0].reply_to, queue_name(queue)
    assert reply, "requests need a reply_to"
    if client.redis.llen(target):
        raise RuntimeError(f"{target} is not empty")
    started = time.perf_counter()
    client.redis.rename(STAGING, target)
    received = 0
    while received < len(requests):  # drain in bulk: the reader shares the machine's cores with the worker
        drained: list[bytes] = list(client.redis.lpop(reply, 1000) or [])  # type: ignore[arg-type]
        if not drained:
            raw = pop(client, reply, within_s=300)
            if raw is None:
                raise RuntimeError("results stopped arriving")
            drained = [raw]
        for item in drained:
            if b'"status":"ok"' not in item:
                raise RuntimeError(f"a request failed: {item[:300]!r}")
        received += len(drained)
    return time.perf_counter() - started


def open_loop(
    url: str, requests: Sequence[ClassifyRequest], rate_per_s: float, seed: int, until: threading.Event | None = None
) -> tuple[list[float], float]:
    """Poisson arrivals at `rate_per_s` on the realtime queue; latency (ms) = result read back - submitted_at.
    With `until`, arrivals stop when it is set (or when `requests` run out). Returns the sorted latencies of the
    requests sent and the CPU ms per request this load generator itself spent (producer and reader share the
    machine's cores with the worker)."""
    reply = requests[0].reply_to
    assert reply, "requests need a reply_to"
    rng = random.Random(seed)
    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    done_sending = threading.Event()

    def collect() -> None:
        give_up_at = math.inf  # 120 s after the last arrival: a result that late is lost, not waited for
        with Client(url) as reader:
            while not (done_sending.is_set() and len(latencies) >= len(sent_at)):
                raw = pop(reader, reply, within_s=2)  # short rounds: the stop condition is seen soon
                if raw is None:
                    if done_sending.is_set():
                        give_up_at = min(give_up_at, time.monotonic() + 120)
                    if time.monotonic() > give_up_at:
                        return
                    continue
                now = time.time()
                latencies.append((now - sent_at[json.loads(raw)["id"]]) * 1000)

    thread = threading.Thread(target=collect, daemon=True)
    cpu_started = time.process_time()
    thread.start()
    with Client(url) as client:
        next_at = time.monotonic()
        for request in requests:
            if until is not None and until.is_set():
                break
            next_at += rng.expovariate(rate_per_s)
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            prepared = client.prepare(request)
            assert prepared.submitted_at is not None
            sent_at[prepared.id] = prepared.submitted_at.timestamp()
            client.submit(prepared, queue="realtime")
    done_sending.set()
    thread.join(timeout=300)
    return sorted(latencies), (time.process_time() - cpu_started) * 1000 / max(1, len(sent_at))


@dataclass(frozen=True)
class OpenLoop:
    """An open-loop phase: its latencies (ms, sorted), the load generator's CPU ms per request, and the seconds
    the load ran (the pauses between stretches left out)."""

    latencies_ms: list[float]
    generator_cpu_ms: float
    load_s: float


def open_loop_in_stretches(
    url: str,
    requests: Sequence[ClassifyRequest],
    rate_per_s: float,
    seed: int,
    stretches: int = 1,
    between: Callable[[int], None] | None = None,
) -> OpenLoop:
    """`open_loop` over `requests` cut in `stretches` consecutive parts, calling `between(i)` before part i,
    once every result of the parts before has been read back (the worker idle then): what the harness times
    alone in-process during a load phase goes there, so both see the same state of the machine."""
    latencies: list[float] = []
    cpu_ms = load_s = 0.0
    for i in range(stretches):
        if between is not None:
            between(i)
        part = requests[i * len(requests) // stretches : (i + 1) * len(requests) // stretches]
        started = time.perf_counter()
        measured, cpu = open_loop(url, part, rate_per_s, seed=seed + i)
        load_s += time.perf_counter() - started
        latencies += measured
        cpu_ms += cpu * len(part)
    return OpenLoop(sorted(latencies), cpu_ms / len(requests), load_s)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]
