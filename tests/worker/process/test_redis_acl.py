"""Redis ACL users: the grant docs/worker.md gives is enough for a worker, a producer and `labelq health`; a user
missing a grant is told so in one line at start (exit 2), never "Redis unreachable", never retried as an outage."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from urllib.parse import urlsplit

import pytest
import redis as redis_lib

from producer import AccessDenied, Client
from schemas import ClassifyRequest
from tests.conftest import WorkerFactory

FAKE_ENV = {"LABELQ_ENABLE_FAKE_MODEL": "true", "LABELQ_MODEL": "fake", "LABELQ_INTRA_OP_THREADS": "1"}
DOCUMENTED_GRANT = ["~*", "&*", "+@all", "-@dangerous"]  # docs/worker.md, "A Redis ACL user"


def _user(redis_url: str, *rules: str) -> str:
    """A new ACL user on the test Redis with `rules`; its URL."""
    name = f"u{uuid.uuid4().hex[:8]}"
    admin = redis_lib.Redis.from_url(redis_url)
    admin.acl_setuser(name, enabled=True, passwords=["+secret"], reset_keys=True, reset_channels=True)
    admin.execute_command("ACL", "SETUSER", name, *rules)
    admin.close()
    parts = urlsplit(redis_url)
    return f"redis://{name}:secret@{parts.hostname}:{parts.port}{parts.path or '/0'}"


def _run(*command: str, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *command],
        env={**os.environ, **FAKE_ENV, "LABELQ_REDIS_URL": url},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_documented_grant_serves_end_to_end(start_worker: WorkerFactory, redis_url: str) -> None:
    url = _user(redis_url, *DOCUMENTED_GRANT)
    start_worker(url=url, enable_fake_model=True, model="fake", celery_events=True)
    with Client(url) as client:
        result = client.wait(client.submit(ClassifyRequest(text="a refund", labels=["refund", "bug"])), timeout_s=30)  # type: ignore[arg-type]
        assert result.id and client.ping_workers(1.0)  # control commands too (pub/sub: &*)
    health = _run("labelq.cli", "health", url=url)
    assert health.returncode == 0, health.stdout + health.stderr


@pytest.mark.parametrize(
    ("rules", "refused"),
    [
        (["~*", "+@all"], "channels"),  # no channels (`resetchannels`, Redis 7's default for a new user)
        (["~nothing*", "&*", "+@all"], "keys"),
        (["~*", "&*", "+@all", "-@scripting"], "eval"),
        (["~*", "&*", "+@all", "-publish"], "publish"),  # results, events and control replies publish
    ],
    ids=["no channels", "no keys", "no scripts", "no publish"],
)
@pytest.mark.parametrize("command", [("labelq.cli", "worker"), ("celery", "-A", "worker.celery_app", "worker")])
def test_a_worker_missing_a_grant_says_so_in_one_line_at_start(
    redis_url: str, rules: list[str], refused: str, command: tuple[str, ...]
) -> None:
    done = _run(*command, url=_user(redis_url, *rules))
    lines = [line for line in done.stderr.splitlines() if "permission" in line]
    assert done.returncode == 2, done.stderr[-3000:]
    assert len(lines) == 1 and refused in lines[0] and "docs/worker.md#a-redis-acl-user" in lines[0]
    assert "Traceback" not in done.stderr and "unreachable" not in done.stderr and "Usage:" not in done.stderr


def test_a_producer_missing_a_grant_is_refused_at_once_not_retried(redis_url: str) -> None:
    url = _user(redis_url, "~nothing*", "&*", "+@all")
    started = time.monotonic()
    with Client(url) as client, pytest.raises(AccessDenied, match="no permissions"):
        client.submit(ClassifyRequest(text="hi", labels=["a", "b"]))  # type: ignore[arg-type]
    assert time.monotonic() - started < 3  # the retry policy rides out ~17 s of outage: not spent on a refusal
    done = _run("labelq.cli", "submit", "hi", "--labels", "a,b", url=url)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "may not do what sending needs" in done.stderr and "unreachable" not in done.stderr
