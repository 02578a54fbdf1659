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

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import redis

from schemas.transport import DEAD_LETTER_KEY, NOTIFY_KEY, RESULT_KEY
from worker.constants import DELIVERIES_KEY, DELIVERIES_TTL_S
from worker.deadletters import DeadLetter
from worker.delivery.webhook_jobs import DEFAULT_SECRET, Scheduler, WebhookJob
from worker.engine.results import Answer, Answered

# KEYS: n delivery counter keys, then the batch's result queues; ARGV: the counters' TTL, n. Returns each
# counter's count after the increment, then each result queue's type ('none' or 'list' may take a result).
_PREFLIGHT = """
local out, n = {}, tonumber(ARGV[2])
for i = 1, n do
  out[i] = redis.call('INCR', KEYS[i])
  redis.call('EXPIRE', KEYS[i], ARGV[1])
end
for i = n + 1, #KEYS do out[i] = redis.call('TYPE', KEYS[i])['ok'] end
return out
"""

# KEYS: the result key and notify key of each result with an id (m pairs), then the q result queues, then the
# delivery counters of the batch's settled messages. ARGV: the TTL, the number of results n, m, q, then per
# result, in batch order: its JSON, the number of its result queue among the q (0: none), the number of its key
# pair (0: no id). Each queue's TTL is refreshed once, after its last push. A result queue that is a key of
# another type is left alone (the preflight turned such requests into errors; this covers a key made since).
# The counters are deleted last, so a batch whose write failed keeps counting toward LABELQ_MAX_DELIVERIES.
_RESULTS = """
local ttl, n, m, q = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local writable = {}
for j = 1, q do
  local kind = redis.call('TYPE', KEYS[2 * m + j])['ok']
  writable[j] = kind == 'none' or kind == 'list'
end
for i = 0, n - 1 do
  local body, queue, pair = ARGV[5 + 3 * i], tonumber(ARGV[6 + 3 * i]), tonumber(ARGV[7 + 3 * i])
  if pair > 0 then
    redis.call('SET', KEYS[2 * pair - 1], body, 'EX', ttl)
    redis.call('RPUSH', KEYS[2 * pair], 1)
    redis.call('EXPIRE', KEYS[2 * pair], ttl)
  end
  if queue > 0 and writable[queue] then redis.call('RPUSH', KEYS[2 * m + queue], body) end
end
for j = 1, q do
  if writable[j] then redis.call('EXPIRE', KEYS[2 * m + j], ttl) end
end
for j = 2 * m + q + 1, #KEYS do redis.call('DEL', KEYS[j]) end
return n
"""


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


class Publisher:
    def __init__(self, client: redis.Redis, result_ttl_s: int) -> None:
        self.client = client
        self.result_ttl_s = result_ttl_s
        self.scheduler = Scheduler(client)
        self._preflight = client.register_script(_PREFLIGHT)
        self._results = client.register_script(_RESULTS)

    def count_deliveries(self, message_ids: Sequence[str]) -> list[int]:
        """Increment and return each message's delivery count (Redis keeps none of its own)."""
        return self.preflight(message_ids, ()).counts

    def preflight(self, message_ids: Sequence[str], reply_queues: Sequence[str]) -> Preflight:
        """Before a batch is handled, in one round trip: count each message's delivery, and find the result
        queues that are Redis keys of another type (a result pushed there would fail the batch's write)."""
        if not message_ids and not reply_queues:
            return Preflight([], frozenset())
        keys = [DELIVERIES_KEY + message_id for message_id in message_ids]
        out = cast(list[int | bytes], self._preflight(keys=[*keys, *reply_queues], args=[DELIVERIES_TTL_S, len(keys)]))
        kinds = dict(zip(reply_queues, out[len(keys) :], strict=True))
        unwritable = frozenset(q for q, kind in kinds.items() if kind not in (b"none", b"list", "none", "list"))
        return Preflight([int(n) for n in out[: len(keys)]], unwritable)

    def publish(
        self, publications: Sequence[Publication], dead_letters: Sequence[DeadLetter], done_ids: Sequence[str]
    ) -> None:
        """Every write of one batch, in one round trip. Raises on a Redis error: nothing is acked then."""
        ttl = self.result_ttl_s
        now_s = time.time()
        pipe = self.client.pipeline(transaction=False)
        keys: list[str] = []  # result and notify key of each result with an id
        queues: dict[str, int] = {}  # result queue -> its number among the script's KEYS after `keys` (from 1)
        written: list[str | int] = []  # per result: JSON, queue number, key pair number (0: none)
        for item in publications:
            body = payload(item.outcome)
            queue = queues.setdefault(item.reply_queue, len(queues) + 1) if item.reply_queue else 0
            if item.outcome.id:  # an error for a request whose id could not be read goes to its queue only
                keys += (RESULT_KEY + item.outcome.id, NOTIFY_KEY + item.outcome.id)
            written += (body, queue, len(keys) // 2 if item.outcome.id else 0)
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
        if keys or queues or done_ids:
            counters = [DELIVERIES_KEY + message_id for message_id in done_ids]
            args = [ttl, len(written) // 3, len(keys) // 2, len(queues), *written]
            self._results(keys=[*keys, *queues, *counters], args=args, client=pipe)
        if len(pipe):
            pipe.execute()
