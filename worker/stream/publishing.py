"""Writing outcomes to Redis: results by id, result queues, webhook jobs, dead letters, delivery counters.

For every outcome with an id: `labelq:result:<id>` holds the result JSON (TTL `result_ttl_s`) and
`labelq:notify:<id>` receives one element (for `wait(id)`). When the request named a result queue, the result
JSON is also RPUSHed onto that Redis list (TTL refreshed); when it named a webhook, a delivery job is scheduled
(worker/delivery/webhook_jobs.py). All of a batch's writes go in one pipeline, before any message is acked.

The per-result writes and the delivery counters are Lua scripts, one call a batch: a result's JSON crosses
the socket once (not once per key it goes to), and a batch of N costs the worker two commands to pack and
parse instead of 6N (counting and publishing 600 results, JSON included, old and new in turn in one process:
165 -> 102 us a result at 77 labels, 100 -> 30 at 2). Each script touches only the keys it is given; a batch
of 1024 results holds Redis for a few milliseconds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import redis

from schemas.codes import exception_name
from schemas.transport import (
    CELERY_RESULT_KEY,
    DEAD_LETTER_KEY,
    INFLIGHT_INDEX_KEY,
    INFLIGHT_KEY,
    NOTIFY_KEY,
    RESULT_KEY,
)
from worker.constants import DEAD_LETTERS_MAX, RESTORES_KEY
from worker.deadletters import DeadLetter
from worker.delivery.webhook_jobs import DEFAULT_SECRET, Scheduler, WebhookJob
from worker.engine.results import Answer, Answered
from worker.stream.messages import NO_CANVAS, Canvas

SERIALISE_CHUNK = 128  # results serialised between two chances for realtime work (`publish`'s `between`)

# KEYS: the restore counters of a batch's messages (n), then the batch's result queues; ARGV: n. Returns each
# counter (false where there is none: never put back, the common case), then each result queue's type ('none'
# or 'list' may take a result). One MGET for all the counters.
_PREFLIGHT = """
local out, n = {}, tonumber(ARGV[1])
if n > 0 then out = redis.call('MGET', unpack(KEYS, 1, n)) end
for i = n + 1, #KEYS do out[i] = redis.call('TYPE', KEYS[i])['ok'] end
return out
"""

# KEYS: the result key and notify key of each result with an id (m pairs), then the q result queues, then the
# result-backend key of each result with a task id (k), then the restore counters to delete, then (when the batch
# is acked in this write) the ledger and its index. ARGV: the TTL, the number of results n, m, q, k, the
# backend's expiry, the number of tags to ack t, then per result, in batch order: its JSON, the number of its
# result queue among the q (0: none), the number of its key pair (0: no id), and the head and tail of its backend
# meta ('' when it has no task id); then the t tags. Each queue's TTL is refreshed once, after its last push. A
# result queue that is a key of another type is left alone (the preflight turned such requests into errors; this
# covers a key made since). Celery's meta is head .. JSON .. tail, SET on its key and PUBLISHed there when a
# client is subscribed, waiting in AsyncResult.get() (one that subscribes later reads the key, as Celery's client
# does; one PUBSUB NUMSUB asks for every meta key of the call): the JSON crosses the socket once. The counters
# and the ack come last: a batch whose write failed keeps counting toward LABELQ_MAX_DELIVERIES, and is acked
# only once every outcome is written (the same atomic step).
_RESULTS = """
local ttl, n, m, q, k = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local expires, t, meta = ARGV[6], tonumber(ARGV[7]), 2 * m + q
local writable, listening = {}, {}
for j = 1, q do
  local kind = redis.call('TYPE', KEYS[2 * m + j])['ok']
  writable[j] = kind == 'none' or kind == 'list'
end
if k > 0 then
  local counts = redis.call('PUBSUB', 'NUMSUB', unpack(KEYS, meta + 1, meta + k))
  for j = 1, k do listening[j] = counts[2 * j] > 0 end
end
for i = 0, n - 1 do
  local at = 8 + 5 * i
  local body, queue, pair, head = ARGV[at], tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2]), ARGV[at + 3]
  if pair > 0 then
    redis.call('SET', KEYS[2 * pair - 1], body, 'EX', ttl)
    redis.call('RPUSH', KEYS[2 * pair], 1)
    redis.call('EXPIRE', KEYS[2 * pair], ttl)
  end
  if queue > 0 and writable[queue] then redis.call('RPUSH', KEYS[2 * m + queue], body) end
  if head ~= '' then
    meta = meta + 1
    local value = head .. body .. ARGV[at + 4]
    redis.call('SET', KEYS[meta], value, 'EX', expires)
    if listening[meta - 2 * m - q] then redis.call('PUBLISH', KEYS[meta], value) end
  end
end
for j = 1, q do
  if writable[j] then redis.call('EXPIRE', KEYS[2 * m + j], ttl) end
end
local last = #KEYS
if t > 0 then last = last - 2 end
if last > 2 * m + q + k then redis.call('DEL', unpack(KEYS, 2 * m + q + k + 1, last)) end
if t > 0 then
  local from = 8 + 5 * n
  redis.call('ZREM', KEYS[#KEYS], unpack(ARGV, from, from + t - 1))
  redis.call('HDEL', KEYS[#KEYS - 1], unpack(ARGV, from, from + t - 1))
end
return n
"""


@dataclass
class _Chunk:
    """The arguments of one `_RESULTS` call: up to SERIALISE_CHUNK results."""

    keys: list[str] = field(default_factory=list)  # result and notify key of each result with an id
    queues: dict[str, int] = field(default_factory=dict)  # result queue -> its number among the queues (from 1)
    metas: list[str] = field(default_factory=list)  # the result-backend key of each result with a task id
    written: list[str | int] = field(default_factory=list)  # per result: JSON, queue, key pair, meta head, tail
    counters: list[str] = field(default_factory=list)  # restore counters to delete (messages put back before)
    tags: list[str] = field(default_factory=list)  # ledger tags acked in this write (the batch's last chunk)
    count: int = 0

    def add(self, item: Publication, body: str, backend: ResultBackend | None, date_done: str) -> None:
        queue = self.queues.setdefault(item.reply_queue, len(self.queues) + 1) if item.reply_queue else 0
        if item.outcome.id:  # an error for a request whose id could not be read goes to its queue only
            self.keys += (RESULT_KEY + item.outcome.id, NOTIFY_KEY + item.outcome.id)
        self.written += (body, queue, len(self.keys) // 2 if item.outcome.id else 0)
        if backend is not None and item.task_id:
            self.metas.append(backend.key_prefix + item.task_id)
            self.written += backend.meta_around(item, date_done)
        else:
            self.written += ("", "")
        self.count += 1

    def write(self, pipe: Any, ttl: int, backend: ResultBackend | None) -> None:
        if not (self.keys or self.queues or self.counters or self.metas or self.tags):
            return
        expires = backend.expires_s if backend else 0
        sizes = [len(self.keys) // 2, len(self.queues), len(self.metas), expires, len(self.tags)]
        args = [ttl, self.count, *sizes, *self.written, *self.tags]
        keys = [*self.keys, *self.queues, *self.metas, *self.counters]
        if self.tags:
            keys += (INFLIGHT_KEY, INFLIGHT_INDEX_KEY)
        # EVAL with the script's text, not redis-py's Script on a pipeline: that asks SCRIPT EXISTS before every
        # execute, one more round trip per batch (per chunk of a bulk batch); the text is ~1 KB, Redis caches it
        pipe.eval(_RESULTS, len(keys), *keys, *args)


@dataclass(frozen=True, slots=True)
class ResultBackend:
    """Celery's Redis result backend, on the broker's own Redis: each outcome is also stored where Celery's
    `AsyncResult(task_id)` reads it, in Celery's JSON meta, in the batch's one round trip."""

    key_prefix: str = CELERY_RESULT_KEY
    expires_s: int = 86_400  # Celery's result_expires

    def meta_around(self, publication: Publication, date_done: str) -> tuple[str, str]:
        """Celery's task meta of an outcome, as the text before and after its result JSON: SUCCESS with the
        result object, or FAILURE with an exception named for the error code (`InvalidReplyTo`, ...) whose one
        argument is the ErrorResult."""
        outcome = publication.outcome
        if isinstance(outcome, Answer):
            head, close = '{"status": "SUCCESS", "result": ', ""
        else:
            head = f'{{"status": "FAILURE", "result": {{"exc_type": "{exception_name(outcome.code)}", "exc_message": ['
            close = '], "exc_module": null}'
        canvas = publication.canvas
        ids = (f', "group_id": {json.dumps(canvas.group)}' if canvas.group else "") + (
            f', "parent_id": {json.dumps(canvas.parent_id)}' if canvas.parent_id else ""
        )
        tail = f'{close}, "traceback": null, "children": [], "date_done": "{date_done}"{ids}, "task_id": '
        return head, tail + json.dumps(publication.task_id) + "}"


def payload(outcome: Answered) -> str:
    """The published JSON of an outcome."""
    return outcome.json() if isinstance(outcome, Answer) else outcome.model_dump_json()


@dataclass(frozen=True, slots=True)
class Preflight:
    counts: list[int]  # each message's deliveries so far, this one included, in the order asked
    unwritable: frozenset[str]  # result queues that are keys of another type


@dataclass(frozen=True, slots=True)
class Publication:
    outcome: Answered
    reply_queue: str | None = None  # a Redis list to RPUSH the result onto
    webhook_url: str | None = None  # a URL to POST the result to (by a webhook worker)
    webhook_secret: str | None = None  # the name of the signing secret
    task_id: str | None = None  # the Celery task id: where the result backend keeps the outcome
    canvas: Canvas = NO_CANVAS  # what Celery asked to happen after the task


class Publisher:
    def __init__(self, client: redis.Redis, result_ttl_s: int, backend: ResultBackend | None = None) -> None:
        self.client = client
        self.result_ttl_s = result_ttl_s
        self.backend = backend  # None: no Celery result backend on this Redis
        self.scheduler = Scheduler(client)
        self._preflight = client.register_script(_PREFLIGHT)

    def preflight(self, digests: Sequence[str], reply_queues: Sequence[str]) -> Preflight:
        """Before a batch is handled, in one round trip: each message's deliveries (1 + the times the sweep put
        its bytes back, by their sha1 `digests`), and the result queues that are Redis keys of another type (a
        result pushed there would fail the batch's write)."""
        if not digests and not reply_queues:
            return Preflight([], frozenset())
        keys = [RESTORES_KEY + digest for digest in digests]
        out = cast(list[Any], self._preflight(keys=[*keys, *reply_queues], args=[len(keys)]))
        kinds = dict(zip(reply_queues, out[len(keys) :], strict=True))
        unwritable = frozenset(q for q, kind in kinds.items() if kind not in (b"none", b"list", "none", "list"))
        return Preflight([1 + int(n or 0) for n in out[: len(keys)]], unwritable)

    def publish(
        self,
        publications: Sequence[Publication],
        dead_letters: Sequence[DeadLetter],
        done_digests: Sequence[str] = (),
        between: Callable[[], None] | None = None,
        ack: Sequence[str] = (),
    ) -> None:
        """Every write of one batch, in one round trip. Raises on a Redis error: nothing is acked then. The results
        go in one script call per `SERIALISE_CHUNK` (a 1,024-result batch of 77 labels in one call held Redis for
        ~50 ms; in chunks, other clients are served between them). With `between` (a bulk batch), each chunk is
        written in its own round trip and `between` called after it: realtime work goes in between
        (worker/engine/gate.py); a Redis failure part-way leaves earlier chunks written and the batch unacked, so its
        messages come back and are answered again (duplicates by id, as after any failed write). Every result is
        serialised before the first write: a result that cannot be (a bug) raises with nothing written.
        `done_digests`: the restore counters of messages that had been put back, deleted with the last chunk;
        `ack`: ledger tags acked in that same atomic step (when nothing is left to do between write and ack)."""
        ttl = self.result_ttl_s
        now_s = time.time()
        pipe = self.client.pipeline(transaction=False)
        backend = self.backend
        date_done = datetime.now(UTC).isoformat() if backend else ""
        bodies = []  # every result serialised before the first write: one that fails writes none of its batch
        for index, item in enumerate(publications):
            if index and not index % SERIALISE_CHUNK and between is not None:
                between()
            bodies.append(payload(item.outcome))
        chunk = _Chunk()
        for index, (item, body) in enumerate(zip(publications, bodies, strict=True)):
            if index and not index % SERIALISE_CHUNK:  # one script call per chunk: Redis serves others in between
                chunk.write(pipe, ttl, backend)
                chunk = _Chunk()
                if between is not None:  # a bulk batch: this chunk written now, realtime work, then the next
                    pipe.execute()
                    between()
            chunk.add(item, body, backend, date_done)
            if item.webhook_url:
                job = WebhookJob(
                    request_id=item.outcome.id,
                    url=item.webhook_url,
                    body=body,
                    secret_name=item.webhook_secret or DEFAULT_SECRET,
                )
                self.scheduler.schedule(pipe, job, now_s)
        for letter in dead_letters:
            pipe.rpush(DEAD_LETTER_KEY, letter.to_json(now_s))
        if dead_letters:
            pipe.ltrim(DEAD_LETTER_KEY, -DEAD_LETTERS_MAX, -1)  # the newest; a flood cannot fill Redis
        chunk.counters = [RESTORES_KEY + digest for digest in done_digests]  # deleted last, with the last chunk
        chunk.tags = list(ack)  # acked in the same step as the last chunk: after every outcome is written
        chunk.write(pipe, ttl, backend)
        if len(pipe):
            pipe.execute()
