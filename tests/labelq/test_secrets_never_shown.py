"""No output of any mode shows a secret: the password in the Redis URL (a sentinel's too), a webhook secret, a
password in the transport options. Bad settings are run with --debug (a traceback, pydantic's errors included)
and without; real workers' logs are read from start to ready, and while Redis cannot be reached."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis as redis_lib

from tests.conftest import WorkerFactory

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "pw" + uuid.uuid4().hex[:12]  # unique: found in output only if printed (short: pydantic cuts long inputs)
KEY_B64 = base64.b64encode(os.urandom(25)).decode()  # a secret's base64 part ('=' padded, as secrets often are)
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.upper().startswith("LABELQ_")}

BAD_SETTINGS = {
    "port not a number": {"LABELQ_REDIS_URL": f"redis://:{PASSWORD}@127.0.0.1:abc/0"},
    "database not a number": {"LABELQ_REDIS_URL": f"redis://u:{PASSWORD}@127.0.0.1:6379/x"},
    "scheme": {"LABELQ_REDIS_URL": f"http://:{PASSWORD}@127.0.0.1:6379/0"},
    "ssl_cert_reqs": {"LABELQ_REDIS_URL": f"rediss://:{PASSWORD}@127.0.0.1:6379/0?ssl_cert_reqs=bogus"},
    "unknown parameter": {"LABELQ_REDIS_URL": f"redis://:{PASSWORD}@127.0.0.1:6379/0?foo={PASSWORD}"},
    "password parameter": {"LABELQ_REDIS_URL": f"redis://127.0.0.1:6379/0?password={PASSWORD}&db=x"},
    "sentinel": {"LABELQ_REDIS_URL": f"sentinel://:{PASSWORD}@127.0.0.1:1;sentinel://:{PASSWORD}@h:port"},
    "sentinel without master": {"LABELQ_REDIS_URL": f"sentinel://:{PASSWORD}@127.0.0.1:1"},
    "misspelt name": {"LABELQ_REDIS_ULR": f"redis://:{PASSWORD}@127.0.0.1:6379/0"},
    "secret not base64": {"LABELQ_WEBHOOK_SECRETS": f'{{"default": "whsec_{PASSWORD}!"}}'},
    "secret without prefix": {"LABELQ_WEBHOOK_SECRETS": f"default={KEY_B64}"},
    "secret without a name": {"LABELQ_WEBHOOK_SECRETS": f"whsec_{KEY_B64}"},
    "secrets not JSON": {"LABELQ_WEBHOOK_SECRETS": f'{{"default": "whsec_{KEY_B64}", '},
    "secret not text": {"LABELQ_WEBHOOK_SECRETS": f'{{"default": ["whsec_{KEY_B64}"]}}'},
    "transport options not JSON": {
        "LABELQ_REDIS_TRANSPORT_OPTIONS": f'{{"sentinel_kwargs": {{"password": "{PASSWORD}"}}'
    },
    "transport options a list": {"LABELQ_REDIS_TRANSPORT_OPTIONS": f'["{PASSWORD}"]'},
}  # fmt: skip
COMMANDS = [("health",), ("submit", "hello", "--labels", "a,b"), ("dlq", "list"), ("worker",), ("webhook-worker",)]


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        env={**CLEAN_ENV, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def assert_hidden(output: str) -> None:
    for secret in (PASSWORD, KEY_B64.rstrip("=")):
        assert secret[2:12] not in output, output[-3000:]  # not even a part of one (a cut repr keeps its ends)


@pytest.mark.parametrize("case", sorted(BAD_SETTINGS))
def test_bad_settings_never_show_a_secret_with_or_without_debug(case: str) -> None:
    for debug in (("--debug",), ()):
        done = run(["-m", "labelq.cli", *debug, "health"], BAD_SETTINGS[case])
        assert done.returncode == 2, (debug, done.stderr[-2000:])  # a usage problem, not a bug (70)
        assert_hidden(done.stdout + done.stderr)


@pytest.mark.parametrize("case", ["ssl_cert_reqs", "secret without a name", "transport options not JSON"])
def test_every_command_and_worker_keeps_them_hidden(case: str) -> None:
    env = BAD_SETTINGS[case]
    for command in COMMANDS:
        done = run(["-m", "labelq.cli", "--debug", *command], env)
        assert done.returncode == 2, (command, done.stderr[-2000:])
        assert_hidden(done.stdout + done.stderr)
    celery = run(["-m", "celery", "-A", "worker.celery_app", "worker"], env)
    assert celery.returncode == 2, celery.stderr[-2000:]
    assert_hidden(celery.stdout + celery.stderr)


def test_a_bad_redis_url_flag_never_shows_its_password() -> None:
    for url in (
        f"redis://:{PASSWORD}@127.0.0.1:abc/0",
        f"rediss://:{PASSWORD}@127.0.0.1:6379/0?ssl_cert_reqs=bogus",
        f"redis://:{PASSWORD}@127.0.0.1:6379/0?socket_timeout=x",
    ):
        for command in (("health",), ("dlq", "list"), ("submit", "hello", "--labels", "a,b")):
            done = run(["-m", "labelq.cli", "--debug", *command, "--redis-url", url], {})
            assert done.returncode == 2, (command, done.stderr[-2000:])
            assert_hidden(done.stdout + done.stderr)


def _user_url(redis_url: str) -> str:
    """A new ACL user with PASSWORD on the test Redis: its URL."""
    name = f"u{uuid.uuid4().hex[:8]}"
    admin = redis_lib.Redis.from_url(redis_url)
    admin.acl_setuser(name, enabled=True, passwords=[f"+{PASSWORD}"], keys=["*"], channels=["*"], commands=["+@all"])
    admin.close()
    parts = urlsplit(redis_url)
    return f"redis://{name}:{PASSWORD}@{parts.hostname}:{parts.port}{parts.path or '/0'}"


def test_workers_logs_never_show_the_password_or_a_webhook_secret(
    start_worker: WorkerFactory, redis_url: str, tmp_path: Path
) -> None:
    url = _user_url(redis_url)
    secrets = {"default": f"whsec_{KEY_B64}"}
    fake = {"enable_fake_model": True, "model": "fake"}
    start_worker(url=url, webhook_secrets=secrets, **fake)
    start_worker(url=url, role="webhooks", webhook_secrets=secrets)
    health = run(["-m", "labelq.cli", "--debug", "health"], {"LABELQ_REDIS_URL": url})
    assert health.returncode in (0, 1), health.stderr  # it reached Redis with the password
    assert_hidden(health.stdout + health.stderr)
    logs = [path.read_text() for path in sorted(tmp_path.glob("*.log"))]
    assert len(logs) == 2 and all("ready" in log for log in logs)
    for log in logs:
        assert_hidden(log)


def test_a_worker_that_cannot_reach_redis_never_logs_the_password(start_worker: WorkerFactory, tmp_path: Path) -> None:
    start_worker(wait=False, url=f"redis://u:{PASSWORD}@127.0.0.1:1/0", enable_fake_model=True, model="fake")
    log = tmp_path / "worker-0.log"
    deadline = time.monotonic() + 120
    while "Cannot connect" not in log.read_text():  # Celery's consumer names the URL it retries
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.1)
    assert_hidden(log.read_text())
