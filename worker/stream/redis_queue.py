"""Taking messages off kombu's Redis queues into labelq's own in-flight ledger, and putting them back.

A claim is one Lua script: it pops up to N messages (and up to a byte budget) from a queue's lists and records
each in labelq's ledger in the same atomic step, so a message is always either in its queue or in the ledger:

    labelq:inflight          hash: tag -> "<the list it came from>\\n<its bytes, exactly as they came>"
    labelq:inflight:index    sorted set: tag -> when it was claimed
    labelq:inflight:seq      one number a claim; a tag is `<claim>.<n>` (labelq's own, never the producer's)
    labelq:restores:<sha1>   how often the sweep put these bytes back (expires after DELIVERIES_TTL_S): a
                             message's deliveries are 1 + this (read by worker/stream/pipeline.py, deleted
                             once it is settled); a first delivery has no counter

A claim costs Redis a few commands whatever its size (one RPOP with a count a list, one HSET and one ZADD for
all it took). An ack removes the tag from both, in the batch's result write when nothing is left to do between
them (worker/stream/publishing.py), else in a round trip of its own. labelq's sweep (`sweep`, run by every worker
every LABELQ_UNACKED_RESTORE_INTERVAL_S) puts back what was claimed longer than LABELQ_VISIBILITY_TIMEOUT_S ago,
byte for byte onto the list it came from, and counts each time it does: bytes put back more than
LABELQ_MAX_DELIVERIES times, and a record that is not one labelq could have written, are handed to the caller
as poison to dead-letter (with their raw bytes) instead, so no message loops and none stops the rest.

Why not kombu's `unacked` hash (what labelq used before): it is shared by every Celery app on the database,
keyed by whatever `delivery_tag` a producer chose (30 requests sharing one tag shared one entry), and restored
by code that parses every stored envelope (one it cannot parse stops its sweep; one it cannot re-route is
dropped). kombu's sweep in labelq's own Celery apps uses labelq's own keys (worker/constants.py), so another
app's unacked messages are left to that app. worker/stream/adoption.py takes over what an earlier labelq left
in kombu's structures.

A message larger than LABELQ_MAX_MESSAGE_BYTES is never held: the claim keeps only its task id, task name and
reply properties (a small stub envelope marked `labelq-oversize`), so it is answered with an error and
dead-lettered the first time it is seen, and Redis frees its bytes at once.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis

from schemas.transport import (
    DEAD_LETTER_KEY,
    INFLIGHT_INDEX_KEY,
    INFLIGHT_KEY,
    INFLIGHT_SEQ_KEY,
    PRIORITY_SEP,
    PRIORITY_STEPS,
    priority_lists,
)
from worker.constants import DEAD_LETTERS_MAX, DELIVERIES_TTL_S, MESSAGE_SERVED_MAX_BYTES, RESTORES_KEY
from worker.deadletters import DeadLetter
from worker.stream.envelopes import Envelope, unwrap

log = logging.getLogger(__name__)

CLAIM_MAX_BYTES = 8 * 1024 * 1024  # one claim returns at most this much (plus one message), whatever its count
SWEEP_MAX = 1000  # entries one sweep looks at (the next sweep takes the rest)

# KEYS: ledger, index, seq, then the lists to pop from in order; ARGV: max count, now, byte budget, the largest
# message served. Returns [tag, payload, tag, payload, ...] (an oversize message's payload is its stub). Per
# claim, not per message: one RPOP with a count a list, one HSET and one ZADD for all it took (each in runs of
# RUN pairs: Lua's unpack has a bound), so a claim of 1,024 costs Redis a handful of commands.
_CLAIM = """
local out, fields, scores = {}, {}, {}
local n, bytes, first = 0, 0, nil
local limit, budget, largest = tonumber(ARGV[1]), tonumber(ARGV[3]), tonumber(ARGV[4])
local RUN = 1000
local function field(t, name)
  local v = type(t) == 'table' and t[name]
  if type(v) == 'string' and #v <= 1024 then return v end
  return nil
end
local function stub(item)  -- what is kept of a message too large to serve: enough to answer it, no more
  local ok, m = pcall(cjson.decode, item)
  if not ok or type(m) ~= 'table' then m = {} end
  local s = {['labelq-oversize'] = #item, ['labelq-limit'] = largest, body = '',
             ['content-type'] = field(m, 'content-type') or 'application/json',
             headers = {id = field(m.headers, 'id'), task = field(m.headers, 'task')},
             properties = {correlation_id = field(m.properties, 'correlation_id'),
                           reply_to = field(m.properties, 'reply_to')}}
  return cjson.encode(s)
end
local function record(t, key)  -- variadic writes in runs: HSET key f v f v ..., ZADD key s m s m ...
  for i = 1, #t, 2 * RUN do
    redis.call(key == KEYS[1] and 'HSET' or 'ZADD', key, unpack(t, i, math.min(i + 2 * RUN - 1, #t)))
  end
end
local full = false
for k = 4, #KEYS do
  if n >= limit or full then break end
  local items = redis.call('RPOP', KEYS[k], limit - n)
  if items then
    for j = 1, #items do
      local item = items[j]
      local size = #item
      if size <= largest and n > 0 and bytes + size > budget then
        -- over the byte budget: this one and the rest go back where they were, the oldest at the right end,
        -- so the next claim takes them first
        local back = {}
        for b = #items, j, -1 do back[#back + 1] = items[b] end
        for i = 1, #back, RUN do redis.call('RPUSH', KEYS[k], unpack(back, i, math.min(i + RUN - 1, #back))) end
        full = true
        break
      end
      n = n + 1
      if not first then  -- one number a claim, written as an integer (Lua's own format turns 1e15 into '1e+15')
        first = redis.call('INCR', KEYS[3])
        if first >= 1e15 then redis.call('SET', KEYS[3], 0) end  -- doubles stay exact; no live tag is that old
        first = string.format('%d', first)
      end
      local tag = first .. '.' .. n
      if size > largest then item = stub(item) end
      bytes = bytes + #item
      fields[#fields + 1] = tag
      fields[#fields + 1] = KEYS[k] .. '\\n' .. item
      scores[#scores + 1] = ARGV[2]
      scores[#scores + 1] = tag
      out[#out + 1] = tag
      out[#out + 1] = item
    end
  end
end
record(fields, KEYS[1])
record(scores, KEYS[2])
return out
"""

# KEYS: ledger, index; ARGV: claimed before this is expired, most entries, max restores, restores key prefix,
# its TTL, now, then every list a record may name. Puts expired entries back on their list (RPUSH: taken next,
# as kombu restores), counting each time these bytes were put back. Returns [restored, tag, reason, ...] for the
# poison: an entry put back too often, or not one labelq wrote; those are hidden from other sweeps for a
# visibility timeout (re-scored to now) while the caller dead-letters them.
_SWEEP = """
local lists = {}
for i = 7, #ARGV do lists[ARGV[i]] = true end
local tags = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local out = {0}
for _, tag in ipairs(tags) do
  local record = redis.call('HGET', KEYS[1], tag)
  if not record then
    redis.call('ZREM', KEYS[2], tag)
  else
    local cut = string.find(record, '\\n', 1, true)
    local list = cut and string.sub(record, 1, cut - 1)
    if list and lists[list] then
      local payload = string.sub(record, cut + 1)
      local counter = ARGV[4] .. redis.sha1hex(payload)
      local times = redis.call('INCR', counter)
      redis.call('EXPIRE', counter, ARGV[5])
      if times <= tonumber(ARGV[3]) then
        redis.call('RPUSH', list, payload)
        redis.call('HDEL', KEYS[1], tag)
        redis.call('ZREM', KEYS[2], tag)
        out[1] = out[1] + 1
      else
        redis.call('ZADD', KEYS[2], ARGV[6], tag)
        out[#out + 1] = tag
        out[#out + 1] = 'too_many_deliveries'
      end
    else
      redis.call('ZADD', KEYS[2], ARGV[6], tag)
      out[#out + 1] = tag
      out[#out + 1] = 'unrestorable'
    end
  end
end
return out
"""

# KEYS: ledger, index; ARGV: the tags in the order they were claimed. Puts each held message back on its list,
# newest first, so the oldest is taken first again. Not counted as a delivery: only the sweep counts (a message
# handed back by a stopping worker before its batch ran was not delivered).
_RELEASE = """
local released = 0
for i = #ARGV, 1, -1 do
  local record = redis.call('HGET', KEYS[1], ARGV[i])
  if record then
    local cut = string.find(record, '\\n', 1, true)
    if cut then
      redis.call('RPUSH', string.sub(record, 1, cut - 1), string.sub(record, cut + 1))
      redis.call('HDEL', KEYS[1], ARGV[i])
      redis.call('ZREM', KEYS[2], ARGV[i])
      released = released + 1
    end
  end
end
return released
"""


_POISON_DETAILS = {
    "too_many_deliveries": "held by a worker that never settled it, more than LABELQ_MAX_DELIVERIES times",
    "unrestorable": "an in-flight record labelq cannot put back (not one labelq wrote)",
}


@dataclass(frozen=True, slots=True)
class Claimed:
    tag: str  # what it is acked by (labelq's own)
    envelope: Envelope  # its task message, headers and content type (worker/stream/envelopes.py)
    digest: str = ""  # sha1 of its bytes as the ledger holds them: what its redeliveries are counted under


@dataclass(frozen=True, slots=True)
class Poison:
    """A ledger entry the sweep would not put back: its raw record, and why."""

    tag: bytes  # as Redis holds it (a forged one need not be text)
    reason: str  # too_many_deliveries | unrestorable
    list: str  # the list it came from ('' when the record does not say)
    raw: bytes  # the message's bytes (the whole record when it cannot be split)


@dataclass(frozen=True, slots=True)
class Swept:
    restored: int
    poison: list[Poison]


def _queue_of(key: str, sep: str) -> str:
    """The queue a list belongs to (a priority sub-list is the queue's name + sep + step)."""
    return key.split(sep, 1)[0]


def _list_for(queue: str, sep: str, step: int) -> str:
    """The list of one priority step (kombu's `_q_for_pri`): the plain list for step 0."""
    return f"{queue}{sep}{step}" if step else queue


class ReliableQueue:
    def __init__(
        self,
        client: redis.Redis,
        transport_options: dict[str, Any] | None = None,
        *,
        max_message_bytes: int = MESSAGE_SERVED_MAX_BYTES,
        claim_max_bytes: int = CLAIM_MAX_BYTES,
    ) -> None:
        """`transport_options`: kombu's (`sep`, `priority_steps`), so the sub-lists are the ones producers use."""
        self.client = client
        options = self.transport_options = transport_options or {}
        self.sep = str(options.get("sep", PRIORITY_SEP))
        self.steps = tuple(int(step) for step in options.get("priority_steps", PRIORITY_STEPS))
        self.max_message_bytes = max_message_bytes
        self.claim_max_bytes = claim_max_bytes
        self._claim = client.register_script(_CLAIM)
        self._sweep = client.register_script(_SWEEP)
        self._release = client.register_script(_RELEASE)

    def lists(self, queue: str) -> list[str]:
        """The Redis lists kombu puts `queue`'s messages on, in the order its consumer reads them."""
        return priority_lists(queue, self.transport_options)

    def list_for(self, queue: str, priority: int) -> str:
        """The list kombu puts a message of `priority` (0-9) on: that of the highest step not above it."""
        return _list_for(queue, self.sep, max(step for step in (0, *self.steps) if step <= priority))

    def claim(self, queue: str, count: int) -> list[Claimed]:
        """Up to `count` messages (fewer when they pass the claim's byte budget), each recorded in the ledger in
        the same atomic step; oldest first, list by list in kombu's order (the plain list, then the priority
        sub-lists). A message over `max_message_bytes` comes back as its stub, marked oversize."""
        if count <= 0:
            return []
        keys = [INFLIGHT_KEY, INFLIGHT_INDEX_KEY, INFLIGHT_SEQ_KEY, *self.lists(queue)]
        args = [count, time.time(), self.claim_max_bytes, self.max_message_bytes]
        flat = cast(list[Any], self._claim(keys=keys, args=args))
        return [
            Claimed(tag.decode("ascii"), unwrap(raw), hashlib.sha1(raw).hexdigest())
            for tag, raw in zip(flat[::2], flat[1::2], strict=True)
        ]

    def ack(self, tags: Sequence[str]) -> None:
        """Forget settled messages (one round trip for a batch)."""
        if tags:
            pipe = self.client.pipeline(transaction=True)
            pipe.zrem(INFLIGHT_INDEX_KEY, *tags)
            pipe.hdel(INFLIGHT_KEY, *tags)
            pipe.execute()

    def release(self, tags: Sequence[str]) -> int:
        """Hand held messages back now, unanswered (a stopping worker): each goes back byte for byte onto the
        list it came from, the first claimed taken first again, in one atomic step, not counted as a delivery.
        Returns how many went back (a tag swept or settled meanwhile is skipped)."""
        if not tags:
            return 0
        return int(cast(int, self._release(keys=[INFLIGHT_KEY, INFLIGHT_INDEX_KEY], args=list(tags))))

    def sweep(self, visibility_timeout_s: float, max_restores: int, queues: Iterable[str]) -> Swept:
        """Put back what was claimed more than `visibility_timeout_s` ago onto the list it came from (each of
        `queues`' lists may be named); what must not go back is returned as poison, still in the ledger, for
        `bury` to dead-letter."""
        now = time.time()
        lists = [key for queue in queues for key in self.lists(queue)]
        args: list[str | float] = [
            now - visibility_timeout_s,
            SWEEP_MAX,
            max_restores,
            RESTORES_KEY,
            DELIVERIES_TTL_S,
            now,
            *lists,
        ]
        flat = cast(list[Any], self._sweep(keys=[INFLIGHT_KEY, INFLIGHT_INDEX_KEY], args=args))
        tags = [bytes(tag) for tag in flat[1::2]]  # as stored: a forged tag need not be text
        reasons = [reason.decode("ascii") for reason in flat[2::2]]
        poison = []
        if tags:
            records = cast(list[bytes | None], self.client.hmget(INFLIGHT_KEY, tags))
            for tag, reason, record in zip(tags, reasons, records, strict=True):
                if record is None:  # settled meanwhile
                    continue
                head, sep, raw = bytes(record).partition(b"\n")
                split = bool(sep) and reason == "too_many_deliveries"
                where = head.decode("utf-8", "replace") if split else ""
                poison.append(Poison(tag, reason, where, raw if split else bytes(record)))
        return Swept(int(flat[0]), poison)

    def bury(self, poison: Sequence[Poison]) -> None:
        """Dead-letter what the sweep would not put back, with its raw bytes, and drop it from the ledger (one
        transaction: a worker that dies half-way leaves it for the next sweep)."""
        if not poison:
            return
        now = time.time()
        pipe = self.client.pipeline(transaction=True)
        for item in poison:
            detail = _POISON_DETAILS.get(item.reason, item.reason)
            letter = DeadLetter(item.reason, _queue_of(item.list, self.sep), item.raw, detail=detail)
            pipe.rpush(DEAD_LETTER_KEY, letter.to_json(now))
        pipe.ltrim(DEAD_LETTER_KEY, -DEAD_LETTERS_MAX, -1)
        tags = [item.tag for item in poison]
        pipe.zrem(INFLIGHT_INDEX_KEY, *tags)
        pipe.hdel(INFLIGHT_KEY, *tags)
        pipe.execute()

    def in_flight(self) -> int:
        return int(self.client.hlen(INFLIGHT_KEY))

    def waiting(self, queue: str) -> int:
        pipe = self.client.pipeline(transaction=False)
        for key in self.lists(queue):
            pipe.llen(key)
        return sum(int(n) for n in pipe.execute())
