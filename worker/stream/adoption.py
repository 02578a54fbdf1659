"""Taking over what an earlier labelq left in kombu's shared unacked structures.

Before the in-flight ledger (worker/stream/redis_queue.py), labelq recorded its claims in kombu's `unacked`
hash (tag -> `[envelope, exchange, routing key]`) and `unacked_index`, and its webhook workers' kombu did the
same for webhook tasks. A worker of this version no longer sweeps those keys (they are every Celery app's), so
each sweep also adopts, from the expired part of `unacked_index`, the entries whose routing key is one of
labelq's queues: each is put back on its queue (as kombu would have restored it) and removed, in one atomic
compare-and-move, so an older worker that acks it meanwhile wins and nothing runs twice. Every other app's
entries are left alone. A record Python cannot parse (kombu could not either) is adopted when it ends the
way an earlier labelq's claim wrote it (`,"","<queue>"]`); otherwise it is not labelq's to touch.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any, cast

import redis

from worker.stream.redis_queue import ReliableQueue

log = logging.getLogger(__name__)

KOMBU_UNACKED_KEY = "unacked"  # kombu's defaults, where labelq before the ledger recorded its claims
KOMBU_UNACKED_INDEX_KEY = "unacked_index"
ADOPT_SCAN = 1000  # expired entries read at a time
ADOPT_PAGES = 10  # pages one sweep looks at: 10,000 entries, past any plausible number of long foreign tasks

# KEYS: unacked, unacked_index, the list to put it on; ARGV: tag, the record as read, the payload to push.
_ADOPT = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('RPUSH', KEYS[3], ARGV[3])
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""


def _priority(envelope: Any) -> int:
    properties = envelope.get("properties") if isinstance(envelope, dict) else None
    value = properties.get("priority") if isinstance(properties, dict) else None
    return min(max(value, 0), 9) if isinstance(value, int) and not isinstance(value, bool) else 0


def target(record: bytes, queue: ReliableQueue, queues: Sequence[str]) -> tuple[str, bytes] | None:
    """(list, payload) when `record` is one of labelq's queues' unacked entries, else None."""
    try:
        parsed = json.loads(record)
    except (ValueError, RecursionError):
        parsed = None
    if isinstance(parsed, list) and len(parsed) == 3 and parsed[2] in queues:
        envelope, routing = parsed[0], parsed[2]
        return queue.list_for(routing, _priority(envelope)), json.dumps(envelope).encode()
    for name in queues:  # what an earlier labelq's claim wrote: '[' .. envelope .. ',"",' .. queue .. ']'
        suffix = b',"",' + json.dumps(name).encode() + b"]"
        if record.startswith(b"[") and record.endswith(suffix) and len(record) > len(suffix) + 1:
            return name, record[1 : -len(suffix)]
    return None


def adopt(client: redis.Redis, queue: ReliableQueue, queues: Iterable[str], visibility_timeout_s: float) -> int:
    """Put labelq's expired entries in kombu's shared unacked hash back on their queues; returns how many.
    Looks at up to ADOPT_PAGES pages of ADOPT_SCAN expired entries (other apps' entries are skipped, not moved,
    so the next page starts past them)."""
    names = list(queues)
    ceil = time.time() - visibility_timeout_s
    script = client.register_script(_ADOPT)
    adopted = skipped = 0
    for _ in range(ADOPT_PAGES):
        page = cast(
            list[bytes], client.zrangebyscore(KOMBU_UNACKED_INDEX_KEY, "-inf", ceil, start=skipped, num=ADOPT_SCAN)
        )
        for tag, record in zip(
            page, cast(list[Any], client.hmget(KOMBU_UNACKED_KEY, page)) if page else [], strict=True
        ):
            found = target(bytes(record), queue, names) if record is not None else None
            moved = 0
            if found is not None:
                key, payload = found
                keys = [KOMBU_UNACKED_KEY, KOMBU_UNACKED_INDEX_KEY, key]
                moved = int(cast(int, script(keys=keys, args=[tag, record, payload])))
            adopted += moved
            skipped += 1 - moved
        if len(page) < ADOPT_SCAN:
            break
    if adopted:
        log.info("adopted %d message(s) an earlier labelq left in kombu's unacked hash: back on their queues", adopted)
    return adopted
