"""LABELQ_REDIS_SHARDS: several Redis servers, in the comma form or JSON, each URL checked as LABELQ_REDIS_URL is,
a server named twice refused in one line (exit 2), never echoing a password; LABELQ_REDIS_URL then the first server
or one of them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from worker.errors import ConfigError
from worker.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("LABELQ_"):
            monkeypatch.delenv(name)


def test_unset_the_one_url_is_the_fleet() -> None:
    settings = load_settings()
    assert settings.redis_shards == () and settings.redis_urls() == (settings.redis_url,)


@pytest.mark.parametrize(
    "value",
    [
        "redis://a:6379/0, redis://:pw@b:6380/1",
        '["redis://a:6379/0", "redis://:pw@b:6380/1"]',
    ],
)
def test_comma_form_and_json(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("LABELQ_REDIS_SHARDS", value)
    settings = load_settings()
    assert settings.redis_urls() == ("redis://a:6379/0", "redis://:pw@b:6380/1")
    assert settings.redis_url == "redis://a:6379/0"  # the first server, for the single-server commands
    one = settings.for_server("redis://:pw@b:6380/1")
    assert one.redis_url == "redis://:pw@b:6380/1" and one.redis_urls() == ("redis://:pw@b:6380/1",)


def test_sentinel_items_keep_their_semicolons(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABELQ_REDIS_SHARDS", "sentinel://s1:26379;sentinel://s2:26379/0,sentinel://s3:26379/0")
    assert load_settings().redis_urls() == ("sentinel://s1:26379;sentinel://s2:26379/0", "sentinel://s3:26379/0")


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("redis://:pw1@a:6379/0,redis://b:6379,redis://:pw2@a:6379", "item 3 names the same server as item 1"),
        ("redis://127.0.0.1:7101/0,redis://localhost:7101/0", "item 2 names the same server as item 1"),
        ("redis://a:6379/0,http://:pw3@b", "item 2: the scheme must be one of"),
        ("redis://a:6379/0,redis://:pw4@b:port", "item 2: the port must be a number"),
        ("redis://a/0,rediss://:pw5@b:6380/0", "item 2): a rediss:// URL needs the URL parameter ssl_cert_reqs"),
    ],
)
def test_a_bad_list_is_one_line_naming_the_item(monkeypatch: pytest.MonkeyPatch, value: str, says: str) -> None:
    monkeypatch.setenv("LABELQ_REDIS_SHARDS", value)
    with pytest.raises(ConfigError) as raised:
        load_settings()
    message = str(raised.value)
    assert says in message and "LABELQ_REDIS_SHARDS" in message and "\n" not in message
    assert "pw" not in message  # never a password


def test_the_one_url_must_be_one_of_the_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABELQ_REDIS_SHARDS", "redis://a:6379/0,redis://b:6379/0")
    monkeypatch.setenv("LABELQ_REDIS_URL", "redis://:pw@b:6379/0")
    assert load_settings().redis_url == "redis://:pw@b:6379/0"  # a worker of the fleet started by hand
    monkeypatch.setenv("LABELQ_REDIS_URL", "redis://c:6379/0")
    with pytest.raises(ConfigError, match="LABELQ_REDIS_URL names a server that is not in LABELQ_REDIS_SHARDS"):
        load_settings()


def test_a_repeated_server_is_exit_2_in_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("LABELQ_")}
    env |= {"PYTHONPATH": str(ROOT), "LABELQ_REDIS_SHARDS": "redis://:secretpw@127.0.0.1:1/0,redis://127.0.0.1:1"}
    done = subprocess.run(
        [sys.executable, "-m", "labelq.cli", "health"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "names the same server" in done.stderr and "secretpw" not in done.stderr
