"""`labelq health`: is the service able to answer? Redis, ready workers and their models, queue depths.

Its exit code follows the table every command follows (README.md, "Errors and exit codes"): 0 healthy; 1
unhealthy (no ready worker, workers of different models on one queue, a worker record it cannot read); 2 one of
labelq's keys holds another Redis type (a stream where a queue's list belongs); 3 Redis unreachable or refusing
the password. Over several Redis servers (LABELQ_REDIS_SHARDS, `check_fleet`) each server is checked as one is:
1 as well when some (not all) are unreachable, or a server has no ready worker (its share is not answered); 3
only when none answers."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from labelq.failures import EXIT_REDIS, EXIT_USAGE
from producer import Client
from schemas.servers import server_name
from schemas.transport import (
    DEAD_LETTER_KEY,
    QUEUES,
    WEBHOOK_CLAIMED_KEY,
    WEBHOOK_SCHEDULE_KEY,
    RedisURLError,
    database_missing,
)
from worker.connections import key_type_problems
from worker.stream.redis_queue import ReliableQueue

HEALTHY, UNHEALTHY, WRONG_KEY_TYPE, REDIS_DOWN = 0, 1, EXIT_USAGE, EXIT_REDIS  # exit codes


@dataclass
class Health:
    redis: str  # "ok" or the error
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)  # ready workers, as they announce themselves
    pinged: list[str] = field(default_factory=list)  # Celery nodes that answered a ping
    depths: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # why it is unhealthy though workers are ready, one line each
    wrong_keys: list[str] = field(default_factory=list)  # "key 'labelq.realtime' is a stream, not a list"

    @property
    def status(self) -> int:
        if self.redis != "ok":
            return REDIS_DOWN
        if self.wrong_keys:
            return WRONG_KEY_TYPE
        return UNHEALTHY if self.problems or not self.workers else HEALTHY

    @property
    def verdict(self) -> str:
        if self.status == HEALTHY:
            return "healthy"
        if self.status == REDIS_DOWN:
            return "redis unreachable"
        if self.status == WRONG_KEY_TYPE:
            return "a key of the wrong type"
        return "no ready worker" if not self.workers else "unhealthy"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.verdict}


def mixed_models(workers: dict[str, dict[str, Any]]) -> list[str]:
    """One line for each queue served by workers of different models: a request naming a model could land on a
    worker without it, and results would come from both."""
    serving: dict[str, list[str]] = defaultdict(list)
    for name, info in sorted(workers.items()):
        for queue in info["queues"]:
            serving[str(queue)].append(name)
    lines = []
    for queue, names in sorted(serving.items()):
        if len({workers[name]["model"] for name in names}) > 1:
            who = ", ".join(f"{name} (model {workers[name]['model']})" for name in names)
            lines.append(f"queue {queue} is served by workers with different models: {who}; run one model per queue")
    return lines


def check(redis_url: str, ping_timeout_s: float = 1.0, transport_options: dict[str, Any] | None = None) -> Health:
    client = Client(redis_url, transport_options=transport_options)
    try:
        client.redis.ping()
    except redis.RedisError as exc:
        client.close()
        missing = database_missing(exc, client.redis.connection_pool.connection_kwargs.get("db", 0))
        if missing:  # Redis answered: the URL's /N is past its databases, a setting (exit 2), not an outage
            raise RedisURLError(missing) from None
        return Health(redis=f"{type(exc).__name__}: {exc}")
    try:
        wrong = key_type_problems(client.redis, transport_options or {})
        if wrong:  # every depth below would fail WRONGTYPE
            return Health(redis="ok", wrong_keys=wrong)
        requests = ReliableQueue(client.redis, transport_options)  # a queue's priority sub-lists count too
        depths = {name: requests.waiting(queue) for name, queue in QUEUES.items()}
        depths |= {
            "in_flight": requests.in_flight(),
            "webhooks_scheduled": int(client.redis.zcard(WEBHOOK_SCHEDULE_KEY)),
            "webhooks_in_delivery": int(client.redis.zcard(WEBHOOK_CLAIMED_KEY)),
            "dead_letters": int(client.redis.llen(DEAD_LETTER_KEY)),
        }
        pinged = sorted(name for reply in client.ping_workers(ping_timeout_s) for name in reply)
        workers, unreadable = client.read_workers()
        problems = [
            f"unreadable worker record at {key}: {why}; a worker of another labelq version? delete the key if no "
            "worker owns it"
            for key, why in sorted(unreadable.items())
        ]
        problems += mixed_models(workers)
        return Health(redis="ok", workers=workers, pinged=pinged, depths=depths, problems=problems)
    finally:
        client.close()


@dataclass
class FleetHealth:
    """`Health` of each server of a fleet, by server name (host:port/db, never a password)."""

    servers: dict[str, Health]
    problems: list[str] = field(default_factory=list)  # across servers: one queue, different models

    @property
    def unreachable(self) -> list[str]:
        return [name for name, health in self.servers.items() if health.status == REDIS_DOWN]

    @property
    def status(self) -> int:
        statuses = [health.status for health in self.servers.values()]
        if all(status == REDIS_DOWN for status in statuses):
            return REDIS_DOWN
        if WRONG_KEY_TYPE in statuses:
            return WRONG_KEY_TYPE
        return UNHEALTHY if self.problems or any(status != HEALTHY for status in statuses) else HEALTHY

    @property
    def verdict(self) -> str:
        status = self.status
        verdicts = {HEALTHY: "healthy", REDIS_DOWN: "redis unreachable", WRONG_KEY_TYPE: "a key of the wrong type"}
        if status in verdicts:
            return verdicts[status]
        down = self.unreachable
        if down:
            return f"partial: {len(down)} of {len(self.servers)} Redis servers unreachable ({', '.join(down)})"
        return "unhealthy"

    def to_dict(self) -> dict[str, Any]:
        return {
            "servers": {name: health.to_dict() for name, health in self.servers.items()},
            "problems": self.problems,
            "status": self.verdict,
        }


def check_fleet(
    redis_urls: tuple[str, ...], ping_timeout_s: float = 1.0, transport_options: dict[str, Any] | None = None
) -> FleetHealth:
    """`check` on each server; a queue served with different models on different servers is a problem too (a
    request naming no model is answered by whichever server its id hashes to)."""
    servers = {server_name(url): check(url, ping_timeout_s, transport_options) for url in redis_urls}
    return FleetHealth(servers=servers, problems=models_across_servers(servers))


def models_across_servers(servers: dict[str, Health]) -> list[str]:
    """One line for each queue whose servers each run one model, but not the same one (a queue mixed on one
    server is that server's own problem, reported there)."""
    models: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))  # queue -> server -> models
    for name, health in servers.items():
        for info in health.workers.values():
            for queue in info["queues"]:
                models[str(queue)][name].add(str(info["model"]))
    lines = []
    for queue, by_server in sorted(models.items()):
        if all(len(found) == 1 for found in by_server.values()) and len(set().union(*by_server.values())) > 1:
            who = ", ".join(f"{name} (model {next(iter(found))})" for name, found in sorted(by_server.items()))
            lines.append(
                f"queue {queue} is served by different models on different servers: {who}; a request's model then "
                "depends on its id's server: run one model per queue on every server"
            )
    return lines
