"""A fleet's Redis servers on the metrics endpoint of `labelq worker` serving several (LABELQ_REDIS_SHARDS): the
parent asks each server at every scrape. (Not in worker/metrics.py, which the engine imports: no Redis there.)"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import redis
from prometheus_client import Metric
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from schemas.servers import server_name
from schemas.transport import INFLIGHT_KEY, QUEUES, priority_lists
from worker.connections import redis_for
from worker.settings import Settings

SERVER_SCRAPE_TIMEOUT_S = 1.0  # a scrape asks each Redis of a fleet for its depths: at most this long a server


class ServersCollector(Collector):
    """A fleet's Redis servers, asked at each scrape (by the parent of `labelq worker` serving several): whether
    each answers (`labelq_redis_up`), what waits in each queue there (`labelq_redis_queue_depth`, priority
    sub-lists included) and what its workers hold (`labelq_redis_in_flight`). Labelled `redis` by the server's
    name (host:port/db, never a password)."""

    def __init__(self, clients: Mapping[str, redis.Redis], transport_options: Mapping[str, Any] | None = None) -> None:
        self.clients = dict(clients)
        self.lists = {queue: priority_lists(queue, transport_options) for queue in QUEUES.values()}

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily(
            "labelq_redis_up", "1 when the fleet's Redis server answered this scrape", labels=["redis"]
        )
        depth = GaugeMetricFamily(
            "labelq_redis_queue_depth", "Messages waiting in a queue on one Redis server", labels=["redis", "queue"]
        )
        held = GaugeMetricFamily(
            "labelq_redis_in_flight", "Messages claimed and not yet acked on one Redis server", labels=["redis"]
        )
        for name, client in self.clients.items():
            try:
                pipe = client.pipeline(transaction=False)
                for keys in self.lists.values():
                    for key in keys:
                        pipe.llen(key)
                pipe.hlen(INFLIGHT_KEY)
                replies = pipe.execute()
            except redis.RedisError:
                up.add_metric([name], 0)
                continue
            up.add_metric([name], 1)
            position = 0
            for queue, keys in self.lists.items():
                depth.add_metric([name, queue], sum(int(n) for n in replies[position : position + len(keys)]))
                position += len(keys)
            held.add_metric([name], int(replies[-1]))
        return [up, depth, held]


def servers_collector(settings: Settings) -> ServersCollector:
    """The collector of `settings`' servers, each asked with a short timeout (a server down costs a scrape at most
    SERVER_SCRAPE_TIMEOUT_S)."""
    timeouts = {"socket_timeout": SERVER_SCRAPE_TIMEOUT_S, "socket_connect_timeout": SERVER_SCRAPE_TIMEOUT_S}
    options = settings.redis_transport_options
    clients = {server_name(url): redis_for(url, options, **timeouts) for url in settings.redis_urls()}
    return ServersCollector(clients, options)
