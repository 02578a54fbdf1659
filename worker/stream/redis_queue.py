"""Taking messages off kombu's Redis queues without a window in which a crash loses them.

kombu's Redis transport pops a message (BRPOP/RPOP) and records it as unacked in a second round trip; a
process killed between the two, or a Redis that goes away between them, loses the message (our Redis-restart
drill lost 1 of 400 that way). Here one Lua script pops up to N messages and records each in kombu's own
unacked structures (`unacked` hash: tag -> [payload, exchange, routing key]; `unacked_index` zset: tag -> time)
atomically, so a message is always either in its queue or unacked. kombu's periodic sweep, which every
labelq worker runs, restores unacked messages older than the visibility timeout to their queue, exactly as it
does for messages kombu took itself. Acks are one pipeline per batch.

Messages are the JSON envelopes kombu (and every Celery client) LPUSHes, read by worker/stream/envelopes.py.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis

from worker.stream.envelopes import Envelope, unwrap

UNACKED_KEY = "unacked"  # kombu's defaults (labelq sets no global key prefix)
UNACKED_INDEX_KEY = "unacked_index"
PRIORITY_SEP = "\x06\x16"  # kombu's Redis transport: a prioritised message goes to queue + sep + step
PRIORITY_STEPS = (0, 3, 6, 9)  # kombu's default `priority_steps`; step 0 is the plain list

# KEYS: unacked, unacked_index, then the queue's lists in kombu's order (the plain list, then its priority
# sub-lists); ARGV: max count, now, the queue's name. Returns [tag, payload, tag, payload, ...]. A tag is the
# envelope's `properties.delivery_tag` when that is a plain ASCII name (what every Celery client sends: a uuid),
# else one made here, so a tag is always ASCII: any bytes a producer put there are only the payload's. The unacked
# record names the queue, not the sub-list: kombu's restore puts it back on the sub-list its priority says.
# The payload is stored as it came whenever it is JSON to Python (kombu's restore reads it with `json.loads`):
# an envelope cjson refuses only for its lone surrogate escapes (`\ud800`, which Python accepts) is tested with
# them made plain; only what is really not JSON is wrapped as `{"body": <message>}`.
_CLAIM = """
local out = {}
local n = 0
local routing = cjson.encode(ARGV[3])
for k = 3, #KEYS do
  while n < tonumber(ARGV[1]) do
    local item = redis.call('RPOP', KEYS[k])
    if not item then break end
    n = n + 1
    local ok, message = pcall(cjson.decode, item)
    if not ok and string.find(item, '\\u[dD][89a-fA-F]') then  -- cjson refuses lone surrogate escapes, which
      ok, message = pcall(cjson.decode, (string.gsub(item, '\\u[dD][89a-fA-F]%x%x', '\\u0041')))  -- Python reads
    end
    local tag = nil
    if ok and type(message) == 'table' and type(message['properties']) == 'table' then
      tag = message['properties']['delivery_tag']
    end
    if type(tag) ~= 'string' or tag == '' or #tag > 128 or string.find(tag, '[^%w%-_.:@]') then
      tag = redis.sha1hex(item) .. ':' .. ARGV[2] .. ':' .. n  -- none, or not a plain ASCII name: one of ours
    end
    local stored = item
    if not ok then stored = cjson.encode({body = item}) end  -- not JSON: wrapped so kombu can still restore it
    redis.call('HSET', KEYS[1], tag, '[' .. stored .. ',"",' .. routing .. ']')
    redis.call('ZADD', KEYS[2], ARGV[2], tag)
    out[#out + 1] = tag
    out[#out + 1] = item
  end
end
return out
"""


@dataclass(frozen=True, slots=True)
class Claimed:
    tag: str  # what it is acked by
    envelope: Envelope  # its task message, headers and content type (worker/stream/envelopes.py)


def priority_lists(queue: str, sep: str = PRIORITY_SEP, steps: Sequence[int] = PRIORITY_STEPS) -> list[str]:
    """The Redis lists kombu puts `queue`'s messages on, in the order its consumer reads them: the plain list
    (priority step 0), then one sub-list per further step (as kombu's `_q_for_pri`)."""
    return [f"{queue}{sep}{step}" if step else queue for step in sorted(set(steps) | {0})]


class ReliableQueue:
    def __init__(self, client: redis.Redis, transport_options: dict[str, Any] | None = None) -> None:
        """`transport_options`: kombu's (`sep`, `priority_steps`), so the sub-lists are the ones producers use."""
        self.client = client
        options = transport_options or {}
        self.sep = str(options.get("sep", PRIORITY_SEP))
        self.steps = tuple(int(step) for step in options.get("priority_steps", PRIORITY_STEPS))
        self._claim = client.register_script(_CLAIM)

    def lists(self, queue: str) -> list[str]:
        return priority_lists(queue, self.sep, self.steps)

    def claim(self, queue: str, count: int) -> list[Claimed]:
        """Up to `count` messages, each recorded as unacked in the same atomic step; oldest first, list by list in
        kombu's order (the plain list, then the priority sub-lists)."""
        if count <= 0:
            return []
        keys = [UNACKED_KEY, UNACKED_INDEX_KEY, *self.lists(queue)]
        flat = cast(list[bytes], self._claim(keys=keys, args=[count, time.time(), queue]))
        return [Claimed(tag.decode("ascii"), unwrap(raw)) for tag, raw in zip(flat[::2], flat[1::2], strict=True)]

    def ack(self, tags: Sequence[str]) -> None:
        """Forget settled messages (one round trip for a batch)."""
        if tags:
            pipe = self.client.pipeline(transaction=True)
            pipe.zrem(UNACKED_INDEX_KEY, *tags)
            pipe.hdel(UNACKED_KEY, *tags)
            pipe.execute()

    def waiting(self, queue: str) -> int:
        pipe = self.client.pipeline(transaction=False)
        for key in self.lists(queue):
            pipe.llen(key)
        return sum(int(n) for n in pipe.execute())
