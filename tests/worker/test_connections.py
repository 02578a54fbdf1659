"""Redis clients from the URL setting: kombu's sentinel:// form is read as kombu reads it."""

from __future__ import annotations

import pytest
import redis

from schemas.transport import SentinelUrl, parse_sentinel_url
from worker.connections import redis_for
from worker.errors import ConfigError


def test_a_sentinel_url_names_every_sentinel_and_the_masters_password_and_db() -> None:
    url = "sentinel://:pw@10.0.0.1:26379/2;sentinel://10.0.0.2;sentinel://10.0.0.3:26380"
    assert parse_sentinel_url(url) == SentinelUrl(
        (("10.0.0.1", 26379), ("10.0.0.2", 26379), ("10.0.0.3", 26380)), "pw", 2
    )
    assert parse_sentinel_url("redis://127.0.0.1:6379/0") is None


def test_a_sentinel_url_needs_the_masters_name() -> None:
    with pytest.raises(ConfigError, match="master_name"):
        redis_for("sentinel://127.0.0.1:26379", {})
    client = redis_for("sentinel://127.0.0.1:26379", {"master_name": "mymaster"})
    assert client.connection_pool.service_name == "mymaster"  # type: ignore[attr-defined]
    assert isinstance(redis_for("redis://127.0.0.1:1/0", {}), redis.Redis)
