"""Redis clients for the worker side, from the one URL setting: `redis://`, `rediss://` (TLS), `unix://`, or
kombu's `sentinel://` form (several sentinels joined by `;`, the master's name in LABELQ_REDIS_TRANSPORT_OPTIONS
`{"master_name": ...}`). Through Sentinel, a client asks the sentinels for the current master on every
(re)connect, so a failover is a reconnect, not an outage."""

from __future__ import annotations

import os
from typing import Any

import redis
from redis.sentinel import Sentinel

from schemas.servers import server_name
from schemas.transport import (
    ACL_DOCS,
    DEAD_LETTER_KEY,
    INFLIGHT_INDEX_KEY,
    INFLIGHT_KEY,
    INFLIGHT_SEQ_KEY,
    QUEUE_TASKS,
    QUEUE_WEBHOOKS,
    QUEUES,
    WEBHOOK_CLAIMED_KEY,
    WEBHOOK_SCHEDULE_KEY,
    RedisURLError,
    database_missing,
    parse_sentinel_url,
    password_refused,
    permission_denied,
    priority_lists,
    redis_url_problem,
    url_database,
)
from worker.errors import ConfigError, LabelqError
from worker.settings import Settings


class RedisRefused(LabelqError):
    """Redis answered and refused the URL's user or password: the worker stops at start (exit 3, README's table)
    instead of Celery's "Trying again" forever. The message never shows the password."""

    exit_code = 3


def connect(settings: Settings, **options: Any) -> redis.Redis:
    """A client of the broker and results Redis (`options`: redis-py's, e.g. `socket_timeout`)."""
    return redis_for(settings.redis_url, settings.redis_transport_options, **options)


def redis_for(url: str, transport_options: dict[str, Any], **options: Any) -> redis.Redis:
    """A client of the Redis at `url` (a `--redis-url` flag as much as the setting); a URL that cannot work is a
    `RedisURLError` saying why, never naming its password."""
    problem = redis_url_problem(url)
    if problem:
        raise RedisURLError(f"invalid Redis URL: {problem}")
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


# Redis keys and channels a worker touches, one of each kind (kombu's and Celery's too): `check_access` tries
# each before the worker starts, so a missing ACL grant is one line at start, not a crash once consuming
ACCESS_KEYS = (
    "labelq.realtime",  # the request queues (and their priority sub-lists)
    "labelq:access-check",  # labelq's own keys: ledger, results, label sets, counters
    "_kombu.binding.labelq.tasks",  # kombu's bindings
    "unacked",  # kombu's shared unacked hash (an earlier labelq's entries are adopted)
    "celery-task-meta-labelq-access-check",  # Celery's result backend
)
ACCESS_CHANNELS = ("/0.celery.pidbox", "/0.celeryev/worker.heartbeat", "celery-task-meta-labelq-access-check")


def check_access(settings: Settings) -> None:
    """Try, harmlessly, what the worker will do: read and write (DEL of a key that does not exist) each kind of
    key, run a script, publish on a channel no one listens to, subscribe to each kind of channel. A refusal is a
    `ConfigError` naming what was refused and where the grants are written; a Redis that does not answer is left
    to the worker's own retries."""
    client = connect(settings, socket_timeout=5)
    try:
        pipe = client.pipeline(transaction=False)
        for key in ACCESS_KEYS:
            pipe.exists(key)
            pipe.delete(key + ":labelq-access-check")
        pipe.eval("return 1", 0)
        pipe.publish(ACCESS_CHANNELS[-1], "")  # results notify, events and control replies publish: no one listens
        pipe.execute()
        pubsub = client.pubsub()
        try:
            pubsub.subscribe(*ACCESS_CHANNELS)
            pubsub.get_message(timeout=1)
        finally:
            pubsub.close()
    except redis.RedisError as exc:
        variable = url_setting()
        missing = database_missing(exc, url_database(settings.redis_url))
        if missing:  # a setting: retrying cannot help
            raise ConfigError(f"{missing}; fix it in {variable}") from None
        if password_refused(exc):
            raise RedisRefused(
                f"Redis at {server_name(settings.redis_url)} refused the user or password in {variable} "
                f"({type(exc).__name__}); check them (redis://user:password@host:port/N)"
            ) from None
        refused = permission_denied(exc)
        if refused is None:
            return  # unreachable or another failure: the worker's connection retries say so themselves
        raise ConfigError(
            f"the Redis user in {variable} lacks a permission the worker needs on {server_name(settings.redis_url)} "
            f"({refused}); grant the ACL in {ACL_DOCS}"
        ) from None
    finally:
        client.close()
    check_key_types(settings)  # the keys it may touch are of the types it needs


def expected_key_types(transport_options: dict[str, Any]) -> dict[str, str]:
    """The keys labelq's queues and records live at, and the Redis type each must be (when it exists): every
    queue's list and its priority sub-lists, the dead-letter list, the webhook schedules, the in-flight ledger."""
    ledger = {INFLIGHT_KEY: "hash", INFLIGHT_INDEX_KEY: "zset", INFLIGHT_SEQ_KEY: "string"}
    expected = {
        key: "list"
        for queue in (*QUEUES.values(), QUEUE_TASKS, QUEUE_WEBHOOKS)
        for key in priority_lists(queue, transport_options)
    }
    return expected | ledger | {DEAD_LETTER_KEY: "list", WEBHOOK_SCHEDULE_KEY: "zset", WEBHOOK_CLAIMED_KEY: "zset"}


def key_type_problems(client: redis.Redis, transport_options: dict[str, Any]) -> list[str]:
    """Each of labelq's keys that holds another type than labelq keeps there, as "key 'labelq.realtime' is a
    stream, not a list" (every command on it would fail WRONGTYPE); empty when all are right or absent."""
    expected = expected_key_types(transport_options)
    pipe = client.pipeline(transaction=False)
    for key in expected:
        pipe.type(key)
    found = [kind.decode() if isinstance(kind, bytes) else str(kind) for kind in pipe.execute()]
    return [
        f"key {key!r} is a {kind}, not a {want}"
        for (key, want), kind in zip(expected.items(), found, strict=True)
        if kind not in (want, "none")
    ]


WRONG_TYPE_HINT = (
    "labelq keeps its queues there: move or delete that key, or give labelq a database of its own "
    "(the /N of LABELQ_REDIS_URL)"
)


def check_key_types(settings: Settings, client: redis.Redis | None = None) -> None:
    """A queue (or another of labelq's keys) of another type is a `ConfigError` naming it: a worker would say it
    is ready and fail on every claim. A Redis that does not answer is left to the worker's own retries."""
    own = client is None
    client = client or connect(settings, socket_timeout=5)
    try:
        problems = key_type_problems(client, settings.redis_transport_options)
    except redis.RedisError:
        return
    finally:
        if own:
            client.close()
    if problems:
        more = f" (and {len(problems) - 1} more such keys)" if len(problems) > 1 else ""
        raise ConfigError(f"{problems[0]}{more}; {WRONG_TYPE_HINT}")


def url_setting() -> str:
    """The setting the Redis URLs came from, for messages: a fleet's servers come from LABELQ_REDIS_SHARDS."""
    return "LABELQ_REDIS_SHARDS" if os.environ.get("LABELQ_REDIS_SHARDS", "").strip() else "LABELQ_REDIS_URL"
