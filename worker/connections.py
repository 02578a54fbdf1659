"""Redis clients for the worker side, from the one URL setting: `redis://`, `rediss://` (TLS), `unix://`, or
kombu's `sentinel://` form (several sentinels joined by `;`, the master's name in LABELQ_REDIS_TRANSPORT_OPTIONS
`{"master_name": ...}`). Through Sentinel, a client asks the sentinels for the current master on every
(re)connect, so a failover is a reconnect, not an outage."""

from __future__ import annotations

from typing import Any

import redis
from redis.sentinel import Sentinel

from schemas.transport import parse_sentinel_url
from worker.errors import ConfigError
from worker.settings import Settings


def connect(settings: Settings, **options: Any) -> redis.Redis:
    """A client of the broker and results Redis (`options`: redis-py's, e.g. `socket_timeout`)."""
    return redis_for(settings.redis_url, settings.redis_transport_options, **options)


def redis_for(url: str, transport_options: dict[str, Any], **options: Any) -> redis.Redis:
    sentinel = parse_sentinel_url(url)
    if sentinel is None:
        return redis.Redis.from_url(url, **options)
    master = transport_options.get("master_name")
    if not master:
        raise ConfigError(
            "a sentinel:// Redis URL needs the master's name: LABELQ_REDIS_TRANSPORT_OPTIONS="
            '\'{"master_name": "mymaster"}\''
        )
    sentinels = Sentinel(  # type: ignore[no-untyped-call, unused-ignore]
        list(sentinel.sentinels),
        sentinel_kwargs=transport_options.get("sentinel_kwargs") or {},
        password=sentinel.password,
        db=sentinel.db,
        **options,
    )
    client: redis.Redis = sentinels.master_for(master)  # type: ignore[no-untyped-call, unused-ignore]
    return client
