"""One model per queue: a classification worker refuses to start on a queue that a live worker serves with another
model.

Requests that name no model are answered by whichever worker claims them: two models on one queue answer from
both, silently, and a request naming a model may land on the worker that lacks it (`unknown_model`). The ready
records (`labelq:worker:<node>`, schemas/transport.py WORKER_KEY: {model, revision, queues, pid}, written by
worker/process/consumer.py while a worker is ready) say which model each live worker serves on which queues.
Models are compared by name: revisions of one model may differ for a while (a rolling upgrade of its files).

Two workers starting at once: each checks before its model loads (a fast refusal), and again once loaded under
a short Redis lock (MODEL_LOCK_KEY) that it holds from that check until its own record is written, so the second
to take the lock sees the first's record and refuses.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import redis

from schemas.transport import KEY_PREFIX, WORKER_KEY, WORKER_KEY_TTL_S, worker_record
from worker.errors import ConfigError

log = logging.getLogger(__name__)

MODEL_LOCK_KEY = KEY_PREFIX + "lock:worker-models"  # held from a starting worker's model check to its ready record
MODEL_LOCK_TTL_S = 15  # the longest a worker that dies holding it keeps the others waiting
MODEL_LOCK_POLL_S = 0.05
RULE_DOCS = "docs/worker.md#one-model-per-queue"

# delete the lock only if it is still ours (it may have expired and been taken by another worker meanwhile)
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


@dataclass(frozen=True, slots=True)
class LiveWorker:
    node: str
    model: str
    queues: tuple[str, ...]


def live_workers(client: redis.Redis) -> list[LiveWorker]:
    """The ready records in Redis; one that is not a record (garbage under the prefix) is skipped here: `labelq
    workers` names it."""
    keys = sorted(client.scan_iter(match=WORKER_KEY + "*", count=1000))
    found = []
    for key, raw in zip(keys, client.mget(keys) if keys else [], strict=True):
        record = worker_record(raw)[1] if raw is not None else None
        if record is None:
            continue
        node = (key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)).removeprefix(WORKER_KEY)
        found.append(LiveWorker(node, record["model"], tuple(q for q in record["queues"] if isinstance(q, str))))
    return found


def model_clash(workers: Iterable[LiveWorker], node: str, model: str, queues: Iterable[str]) -> str | None:
    """Why worker `node` may not serve `model` on `queues` beside `workers`, or None when it may (another worker of
    the same node name is this one's earlier life: its record outlives it by up to WORKER_KEY_TTL_S)."""
    wanted = list(queues)
    for other in workers:
        shared = [queue for queue in wanted if queue in other.queues]
        if other.node != node and other.model != model and shared:
            return (
                f"worker {node} would serve model {model} on {shared[0]}, which worker {other.node} serves with "
                f"model {other.model}: one model per queue ({RULE_DOCS}); start it with LABELQ_MODEL={other.model}, "
                f"on other queues (-Q), or after {other.node} stops (its record goes within {WORKER_KEY_TTL_S} s)"
            )
    return None


def check_one_model(client: redis.Redis, node: str, model: str, queues: Iterable[str]) -> None:
    """`ConfigError` (one line, exit 2) when a live worker serves another model on one of `queues`."""
    clash = model_clash(live_workers(client), node, model, queues)
    if clash is not None:
        raise ConfigError(clash)


class ModelLock:
    """The short lock a starting worker holds from its last model check until its ready record is written."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.token = uuid.uuid4().hex
        self.held = False

    def acquire(self, wait_s: float = MODEL_LOCK_TTL_S + 5) -> bool:
        """Take the lock, waiting for another starting worker to release it (or for its expiry, if it died);
        False when it could not be had in `wait_s` (the check then runs without it, and says so)."""
        deadline = time.monotonic() + wait_s
        while not self.client.set(MODEL_LOCK_KEY, self.token, nx=True, ex=MODEL_LOCK_TTL_S):
            if time.monotonic() > deadline:
                log.warning(
                    "the model check's lock (%s) stayed taken for %.0f s; checking without it", MODEL_LOCK_KEY, wait_s
                )
                return False
            time.sleep(MODEL_LOCK_POLL_S)
        self.held = True
        return True

    def release(self) -> None:
        if self.held:
            self.held = False
            self.client.eval(_RELEASE, 1, MODEL_LOCK_KEY, self.token)
