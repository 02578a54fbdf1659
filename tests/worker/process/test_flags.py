"""Celery's worker flags on a labelq worker: honoured (-c N, --max-tasks-per-child, --max-memory-per-child),
refused in one line (-P threads, --autoscale), never silently ignored."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from producer import Client
from schemas import ClassifyRequest, parse_result
from tests.conftest import WorkerFactory
from tests.worker.test_streaming import wait_for_length
from worker.errors import ConfigError
from worker.process.flags import Recycle, child_argv, pool_name, read_flags

WORKER_ARGS = ["--loglevel", "INFO", "-n", "flags@%h", "--without-mingle", "--without-gossip"]
FAKE = {"LABELQ_ENABLE_FAKE_MODEL": "true", "LABELQ_MODEL": "fake", "LABELQ_INTRA_OP_THREADS": "1"}


# --- reading the flags -----------------------------------------------------------------------------------


def test_pools_that_cannot_share_a_model_and_autoscale_are_refused_by_name() -> None:
    for pool in ("threads", "gevent", "eventlet"):
        with pytest.raises(ConfigError, match=f"-P {pool}: .*-c N"):
            read_flags({"pool": pool}, None, None)
    with pytest.raises(ConfigError, match="--autoscale"):
        read_flags({"autoscale": "10,2"}, None, None)
    assert read_flags({"pool_cls": "celery.concurrency.solo:TaskPool", "concurrency": 3}, None, None).processes == 3


def test_recycling_limits_below_one_are_refused_by_name() -> None:
    for flag in ("max_tasks_per_child", "max_memory_per_child"):
        with pytest.raises(ConfigError, match=f"--{flag.replace('_', '-')} -5: a positive number"):
            read_flags({flag: -5}, None, None)


def test_a_child_that_refuses_its_configuration_stops_the_supervisor_instead_of_looping() -> None:
    from worker.process.launcher import _supervise

    refusing = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(2)"])
    sibling = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    spawned: list[int] = []
    stopping: list[int] = []
    started = time.monotonic()
    _supervise([refusing, sibling], lambda index: spawned.append(index) or refusing, stopping)  # type: ignore[func-returns-value]
    assert time.monotonic() - started < 10 and not spawned and stopping
    assert sibling.wait(timeout=10) == -signal.SIGTERM  # the others are stopped, not left running


def test_a_flag_wins_over_the_setting_and_either_asks_for_a_supervisor() -> None:
    flags = read_flags({"concurrency": 1, "max_tasks_per_child": 10}, 500, 2048)
    assert (flags.max_tasks_per_child, flags.max_memory_per_child_kb, flags.supervised) == (10, 2048, True)
    assert not read_flags({"concurrency": 1}, None, None).supervised


def test_a_child_gets_the_same_command_line_with_one_process_and_its_own_name() -> None:
    argv = ["-A", "worker.celery_app", "worker", "-c", "4", "--hostname=w@h", "-Q", "labelq.bulk", "-c3"]
    assert child_argv(argv, 1, "w@h") == [
        "-A",
        "worker.celery_app",
        "worker",
        "-Q",
        "labelq.bulk",
        "-c",
        "1",
        "-n",
        "w-1@h",
    ]


def test_pool_names_from_classes_and_strings() -> None:
    from celery.concurrency.solo import TaskPool

    assert pool_name(TaskPool) == "solo"
    assert pool_name("celery.concurrency.thread:TaskPool") == "threads"
    assert pool_name("threads") == "threads"


def test_recycling_is_due_on_tasks_or_memory() -> None:
    assert Recycle(max_tasks=5).reason(4) is None
    assert "settled 5" in (Recycle(max_tasks=5).reason(5) or "")
    assert "resident memory" in (Recycle(max_memory_kb=1).reason(0) or "")  # any process is over 1 KiB
    assert Recycle(max_memory_kb=10**9).reason(0) is None


# --- real processes --------------------------------------------------------------------------------------


def _celery_worker(redis_url: str, tmp_path: Path, *flags: str, **env: str) -> subprocess.Popen[bytes]:
    with (tmp_path / "celery-worker.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", *WORKER_ARGS, *flags],
            env={**os.environ, **FAKE, "LABELQ_REDIS_URL": redis_url, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (("-P", "threads"), "-P threads"),
        (("--autoscale", "4,1"), "--autoscale"),
        (("--max-tasks-per-child", "-5"), "--max-tasks-per-child -5"),
        (("-c", "2", "--max-memory-per-child=-1"), "--max-memory-per-child -1"),
    ],
)
def test_celery_refuses_a_flag_that_cannot_apply_in_one_line(
    redis_url: str, tmp_path: Path, flags: tuple[str, ...], words: str
) -> None:
    process = _celery_worker(redis_url, tmp_path, *flags)
    code = process.wait(timeout=60)
    output = (tmp_path / "celery-worker.log").read_text()
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and words in errors[0], output[-2000:]
    assert "Traceback" not in output


@pytest.mark.slow
def test_celery_dash_c_runs_that_many_processes_and_stops_them_all(
    redis_url: str, tmp_path: Path, client: Client
) -> None:
    process = _celery_worker(redis_url, tmp_path, "-c", "2")
    try:
        deadline = time.monotonic() + 90
        while len(client.workers()) < 2 and time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / "celery-worker.log").read_text()[-3000:]
            time.sleep(0.2)
        names = sorted(client.workers())
        pids = _pids(client)
        assert len(names) == 2 and all(name.startswith(("flags-0@", "flags-1@")) for name in names), names
        assert len(pids) == 2 and process.pid not in pids  # two processes of their own, under this one
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        assert not client.workers()  # both children stopped (they retire their readiness keys)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.mark.slow
def test_a_process_past_max_tasks_per_child_is_replaced_and_nothing_is_lost(
    start_worker: WorkerFactory, client: Client, tmp_path: Path
) -> None:
    start_worker(enable_fake_model=True, model="fake", max_tasks_per_child=100, bulk_batch_size=32, bulk_max_pairs=200)
    first_pid = _pids(client)
    requests = [
        ClassifyRequest(id=f"r-{i}", text=f"refund {i}", labels=["refund", "bug"], reply_to="results:recycle")  # type: ignore[arg-type]
        for i in range(500)
    ]
    client.submit_many(requests, queue="bulk")
    wait_for_length(client, "results:recycle", 500, timeout_s=180)
    got = [str(parse_result(raw).id) for raw in client.redis.lrange("results:recycle", 0, -1)]
    log = (tmp_path / "worker-0.log").read_text()
    recycles = log.count("recycled after")
    twice = len(got) - len(set(got))
    print(f"\nmax tasks per child 100: 500 answered by {recycles + 1} processes in turn; {twice} twice")
    assert set(got) == {r.id for r in requests}
    assert recycles >= 3  # 500 / 100 (a batch may carry one past the limit)
    deadline = time.monotonic() + 30
    while _pids(client) in (first_pid, set()) and time.monotonic() < deadline:  # the last replacement is ready
        time.sleep(0.2)
    assert _pids(client) and _pids(client) != first_pid


def _pids(client: Client) -> set[int]:
    """The process ids the ready workers announce."""
    return {json.loads(client.redis.get("labelq:worker:" + name) or b"{}").get("pid") for name in client.workers()}
