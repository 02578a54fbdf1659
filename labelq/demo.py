"""`labelq demo`: the whole service on one machine, end to end, leaving nothing behind."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

from labelq.local_redis import redis_url
from labelq.processes import stop_process
from producer import Client
from schemas import ClassificationResult, ClassifyRequest, ErrorResult, parse_result

REPLY_QUEUE = "demo:results"
# moderation requests name the built-in label set `moderation` (hateful, offensive, spam: worker/stream/builtin/)
MODERATION_TEXTS = [
    "You are a worthless idiot and everyone knows it",
    "Thanks so much for your help yesterday, really appreciated!",
    "CLICK HERE to win a FREE iPhone, limited offer!!!",
    "I know where you live and you will regret this",
    "Have a lovely weekend, see you on Monday",
    "Buy cheap followers now, best prices guaranteed",
]
ROUTING = (
    ["billing", "technical problem", "account access", "delivery", "praise"],
    [
        "I was charged twice for my subscription",
        "The app crashes every time I open the settings page",
        "I forgot my password and can't log in",
        "My parcel was supposed to arrive on Monday and it is still not here",
        "Your support team is fantastic, thank you",
        "Why is there an extra fee on my invoice this month?",
    ],
)


def demo_requests(count: int) -> list[ClassifyRequest]:
    moderation = [
        ClassifyRequest(
            id=f"mod-{i}",
            text=text,
            label_set="moderation",
            reply_to=REPLY_QUEUE,
            metadata={"use": "moderation"},
        )
        for i, text in enumerate(MODERATION_TEXTS)
    ]
    routing = [
        ClassifyRequest(
            id=f"route-{i}",
            text=text,
            labels=ROUTING[0],
            reply_to=REPLY_QUEUE,
            metadata={"use": "routing"},
        )
        for i, text in enumerate(ROUTING[1])
    ]
    mixed = [r for pair in itertools.zip_longest(moderation, routing) for r in pair if r is not None]
    return [r.model_copy(update={"id": f"{r.id}-{n}"}) for n, r in zip(range(count), itertools.cycle(mixed))]


def describe(result: ClassificationResult | ErrorResult, texts: dict[str, str]) -> str:
    if isinstance(result, ErrorResult):
        return f"{result.id}: error {result.code.value}: {result.message}"
    use = result.metadata.get("use", "?")
    text = texts.get(result.id, "")
    head = f"[{use:<10}] {text[:58]!r:<62}"
    if use == "moderation":
        verdict = f"flags: {', '.join(result.accepted) or '-'} (top {result.top} {result.labels[0].score:.2f})"
    else:
        verdict = f"route: {result.top} ({result.labels[0].score:.2f})"
    wait = result.timings.queue_ms or 0.0
    return f"{head} {verdict}  [{wait + result.timings.batch_ms:.0f} ms]"


def run_demo(*, count: int, timeout_s: float) -> int:
    with redis_url() as url, tempfile.TemporaryDirectory(prefix="labelq-demo-") as scratch:
        where = "LABELQ_REDIS_URL" if os.environ.get("LABELQ_REDIS_URL") else "a private redis-server"
        click.echo(f"redis: {url} ({where})")
        if os.environ.get("LABELQ_REDIS_SHARDS"):
            click.echo("note: the demo runs on one Redis: LABELQ_REDIS_SHARDS is left aside for it")
        log_path = Path(scratch) / "worker.log"
        env = {**os.environ, "LABELQ_REDIS_URL": url, "LABELQ_REDIS_SHARDS": ""}  # its worker serves that one
        with log_path.open("wb") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "labelq.cli", "worker", "--loglevel", "INFO"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            return _drive(url, worker, log_path, count=count, timeout_s=timeout_s)
        finally:
            stop_process(worker, timeout_s=20)  # warm shutdown: the worker finishes its batch


def _drive(url: str, worker: subprocess.Popen[bytes], log_path: Path, *, count: int, timeout_s: float) -> int:
    requests = demo_requests(count)
    texts = {r.id: r.text for r in requests}
    with Client(url) as client:
        client.redis.delete(REPLY_QUEUE)
        started = time.monotonic()
        while not client.wait_for_workers(timeout_s=1.0):
            if worker.poll() is not None or time.monotonic() - started > timeout_s:
                click.echo(f"the worker did not become ready:\n{log_path.read_text()[-3000:]}", err=True)
                return 1
        click.echo(
            f"worker: ready in {time.monotonic() - started:.1f} s (pid {worker.pid}); sending {len(requests)} requests "
            "(moderation: multi-label, routing: single-label) to the realtime queue"
        )
        client.submit_many(requests, queue="realtime")
        seen: set[str] = set()
        deadline = time.monotonic() + timeout_s
        while len(seen) < len(requests):
            if worker.poll() is not None:
                click.echo(f"worker exited with {worker.returncode}:\n{log_path.read_text()[-3000:]}", err=True)
                return 1
            if time.monotonic() > deadline:
                click.echo(f"timed out with {len(seen)} of {len(requests)} results", err=True)
                return 1
            popped = client.redis.blpop([REPLY_QUEUE], timeout=1)
            if popped is None:
                continue
            result = parse_result(popped[1])
            if result.id and result.id not in seen:
                seen.add(result.id)
                click.echo(describe(result, texts))
    click.echo(f"done: {len(seen)} results; shutting down")
    return 0
