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

from worker.stream.envelopes import unwrap

UNACKED_KEY = "unacked"  # kombu's defaults (labelq sets no global key prefix)
UNACKED_INDEX_KEY = "unacked_index"

# KEYS: queue, unacked, unacked_index; ARGV: max count, now. Returns [tag, payload, tag, payload, ...]. A tag is
# the envelope's `properties.delivery_tag` when that is a plain ASCII name (what every Celery client sends: a
# uuid), else one made here, so a tag is always ASCII: any bytes a producer put there are only the payload's.
# The payload is stored as it came whenever it is JSON to Python (kombu's restore reads it with `json.loads`):
# an envelope cjson refuses only for its lone surrogate escapes (`\ud800`, which Python accepts) is tested with
# them made plain; only what is really not JSON is wrapped as `{"body": <message>}`.
_CLAIM = """
local out = {}
for i = 1, tonumber(ARGV[1]) do
  local item = redis.call('RPOP', KEYS[1])
  if not item then break end
  local ok, message = pcall(cjson.decode, item)
  if not ok and string.find(item, '\\u[dD][89a-fA-F]') then  -- cjson refuses lone surrogate escapes, which
    ok, message = pcall(cjson.decode, (string.gsub(item, '\\u[dD][89a-fA-F]%x%x', '\\u0041')))  -- Python reads
  end
  local tag = nil
  if ok and type(message) == 'table' and type(message['properties']) == 'table' then
    tag = message['properties']['delivery_tag']
  end
  if type(tag) ~= 'string' or tag == '' or #tag > 128 or string.find(tag, '[^%w%-_.:@]') then
    tag = redis.sha1hex(item) .. ':' .. ARGV[2] .. ':' .. i  -- none, or not a plain ASCII name: one of ours
  end
  local stored = item
  if not ok then stored = cjson.encode({body = item}) end  -- not JSON: wrapped so kombu can still restore it
  redis.call('HSET', KEYS[2], tag, '[' .. stored .. ',"",' .. cjson.encode(KEYS[1]) .. ']')
  redis.call('ZADD', KEYS[3], ARGV[2], tag)
  out[#out + 1] = tag
  out[#out + 1] = item
end
return out
"""


@dataclass(frozen=True, slots=True)
class Claimed:
    tag: str
    body: bytes
    headers: dict[str, Any]
    content_type: str | None
    problem: str | None = None  # why its body could not be read (worker/stream/envelopes.py)


class ReliableQueue:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._claim = client.register_script(_CLAIM)

    def claim(self, queue: str, count: int) -> list[Claimed]:
        """Up to `count` messages, oldest first, each recorded as unacked in the same atomic step."""
        if count <= 0:
            return []
        flat = cast(list[bytes], self._claim(keys=[queue, UNACKED_KEY, UNACKED_INDEX_KEY], args=[count, time.time()]))
        claimed = []
        for tag, raw in zip(flat[::2], flat[1::2], strict=True):
            envelope = unwrap(raw)
            claimed.append(
                Claimed(tag.decode("ascii"), envelope.body, envelope.headers, envelope.content_type, envelope.problem)
            )
        return claimed

    def ack(self, tags: Sequence[str]) -> None:
        """Forget settled messages (one round trip for a batch)."""
        if tags:
            pipe = self.client.pipeline(transaction=True)
            pipe.zrem(UNACKED_INDEX_KEY, *tags)
            pipe.hdel(UNACKED_KEY, *tags)
            pipe.execute()

    def waiting(self, queue: str) -> int:
        return int(self.client.llen(queue))
