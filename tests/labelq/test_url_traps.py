"""Traps in LABELQ_REDIS_URL found by an outside tester (issue 32): query parameters that crashed health, submit
and the worker (exit 70), a /N past the server's databases (retried as an outage), and a wrong password that the
workers retried forever. Each is one line, no traceback, no password, and an exit code from README's table."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from labelq.local_redis import RedisServer, find_redis_server
from schemas.transport import URL_PARAMETERS, redis_url_problem

FAKE = {"LABELQ_MODEL": "fake", "LABELQ_ENABLE_FAKE_MODEL": "1"}
COMMANDS = (
    ("labelq.cli", "health"),
    ("labelq.cli", "submit", "hello", "--labels", "a,b"),
    ("labelq.cli", "worker"),
)


def run(*command: str, redis_url: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, **FAKE, **env, "LABELQ_REDIS_URL": redis_url}
    environment.pop("LABELQ_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", *command], env=environment, capture_output=True, text=True, timeout=120
    )


def one_line(done: subprocess.CompletedProcess[str], code: int) -> str:
    assert done.returncode == code, f"exit {done.returncode}, expected {code}\n{done.stdout}\n{done.stderr}"
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    return errors[0]


# 1. query parameters: only those every reader of the URL (kombu, Celery's backend, redis-py) takes are accepted

REFUSED = (
    "socket_timeout=5", "socket_connect_timeout=5", "health_check_interval=3", "socket_keepalive=true", "db=0",
    "client_name=x", "retry_on_timeout=true", "max_connections=5", "protocol=3", "encoding=utf-8", "lib_name=x",
    "timeout=3", "socket_timeout=-1", "socket_timeout=inf", "socket_timeout=nan", "max_connections=-3",
    "encoding=bogus", "retry_on_error=x", "password=x", "decode_responses=true",
)  # fmt: skip


@pytest.mark.parametrize("query", REFUSED)
def test_a_url_parameter_kombu_cannot_take_is_one_line_exit_2_in_health(redis_url: str, query: str) -> None:
    name = query.split("=")[0]
    line = one_line(run("labelq.cli", "health", redis_url=f"{redis_url}?{query}"), 2)
    assert f"URL parameter {name}" in line and "accepted in the URL: ssl_" in line, line


def test_a_url_parameter_is_refused_in_submit_and_the_worker_too(redis_url: str) -> None:
    for command in COMMANDS[1:]:
        line = one_line(run(*command, redis_url=f"{redis_url}?socket_timeout=5"), 2)
        assert "URL parameter socket_timeout" in line and "LABELQ_REDIS_TRANSPORT_OPTIONS" in line, command


@pytest.mark.parametrize("name", sorted(URL_PARAMETERS))
def test_each_accepted_parameter_passes_the_check_on_a_tls_url(name: str) -> None:
    value = {"boolean": "true", "choice": "required"}.get(URL_PARAMETERS[name], "x")
    assert redis_url_problem(f"rediss://h:6380/0?ssl_cert_reqs=required&{name}={value}") is None


def test_plain_url_still_works_in_health(redis_url: str) -> None:
    done = run("labelq.cli", "health", redis_url=redis_url)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr  # no ready worker: not 70


# 2. a database past the server's `databases`


def test_a_database_out_of_range_is_one_line_exit_2_everywhere(redis_url: str) -> None:
    url = redis_url.rsplit("/", 1)[0] + "/99999"
    for command in (*COMMANDS, ("labelq.cli", "webhook-worker"), ("celery", "-A", "worker.celery_app", "worker")):
        line = one_line(run(*command, redis_url=url), 2)
        assert "/99999" in line and "DB index is out of range" in line, (command, line)


# 3. a wrong password: the workers' start-up check stops them (exit 3), no password shown


@pytest.fixture
def guarded() -> Iterator[RedisServer]:
    binary = find_redis_server()
    assert binary, "no redis-server"
    server = RedisServer(binary, password="right-password").start()
    yield server
    server.close()


def test_a_worker_refuses_a_wrong_password_in_one_line_exit_3(guarded: RedisServer) -> None:
    wrong = guarded.url.replace("right-password", "wrong-password")
    unknown_user = guarded.url.replace(":right-password@", "nobody:right-password@")
    for url in (wrong, unknown_user):
        for command in (
            ("labelq.cli", "worker"),
            ("labelq.cli", "webhook-worker"),
            ("celery", "-A", "worker.celery_app", "worker"),
        ):
            done = run(*command, redis_url=url)
            line = one_line(done, 3)
            assert "refused the user or password" in line, (command, line)
            assert "right-password" not in done.stderr, command
            assert "wrong-password" not in done.stderr + done.stdout, command


# found by an outside check of the fleet: each was silently wrong or an internal error


def test_servers_joined_by_a_semicolon_are_refused_not_read_as_the_first_alone(redis_url: str) -> None:
    """`redis://a;redis://b` was one URL: the second server silently dropped (health said healthy of the first)."""
    joined = f"{redis_url};redis://127.0.0.1:1/0"
    for done in (
        run("labelq.cli", "health", redis_url=joined),
        run("labelq.cli", "health", redis_url=redis_url, LABELQ_REDIS_SHARDS=joined),
    ):
        line = one_line(done, 2)
        assert "';' joins the sentinels of one sentinel:// server" in line and "separated by ','" in line, line
    assert "needs its own sentinel://" in (redis_url_problem("sentinel://h1:26379;h2:26379") or "")
    assert redis_url_problem("sentinel://h1:26379;sentinel://h2:26379") is None


def test_a_database_with_a_trailing_slash_is_one_line_exit_2_not_an_internal_error(redis_url: str) -> None:
    """`/0/`: redis-py refused it deep inside (`Database is int ... not 0/`), exit 70."""
    for command in COMMANDS[:2]:
        line = one_line(run(*command, redis_url=f"{redis_url}/"), 2)
        assert "must be a number, not '0/'" in line, line


def test_a_fleet_server_that_refuses_the_password_is_named_with_the_setting_it_came_from(
    redis_url: str, guarded: RedisServer
) -> None:
    """The line pointed at LABELQ_REDIS_URL (unset) and named no server when a fleet's server refused it."""
    from schemas.servers import server_name

    wrong = guarded.url.replace("right-password", "wrong-password")
    shards = f"{redis_url},{wrong}"
    for command in (("labelq.cli", "worker"), ("celery", "-A", "worker.celery_app", "worker")):
        done = run(*command, redis_url=redis_url, LABELQ_REDIS_SHARDS=shards)
        line = one_line(done, 3)
        assert f"Redis at {server_name(wrong)} refused the user or password in LABELQ_REDIS_SHARDS" in line, line
        assert "wrong-password" not in done.stderr + done.stdout
