"""Starting worker processes: one Celery worker (pool solo) in this process, or N of them as children.

Each process holds one model session. With N processes and no explicit `LABELQ_INTRA_OP_THREADS`, each gets
cores // N onnxruntime threads, so N processes never oversubscribe the cores.

A fleet over several Redis servers (LABELQ_REDIS_SHARDS): N processes for each server, each an ordinary worker of
that one server (its LABELQ_REDIS_URL, no LABELQ_REDIS_SHARDS), named `<name>-s<K>-<i>@host`. A server that goes
down stops only its own processes' work: they retry it (or exit and are replaced, with the growing pause), and the
other servers' processes keep answering.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from types import FrameType

from worker.errors import ConfigError
from worker.process.flags import EXIT_RECYCLE, EXIT_USAGE, SUPERVISED_ENV, WorkerFlags, child_argv
from worker.settings import Settings

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # linux/prctl.h
SUPERVISE_POLL_S = 0.2  # how often the parent looks at its children
RESTART_QUICK_DEATH_S = 60.0  # a replacement that dies younger than this makes the next pause longer
RESTART_BASE_PAUSE_S = 1.0  # pauses 2, 4, 8 ... s between replacements that keep dying young
RESTART_MAX_PAUSE_S = 60.0


def child_environment(
    processes: int, metrics_dir: str | None = None, settings: Settings | None = None, server: str | None = None
) -> dict[str, str]:
    """A child's environment: its siblings' count (on CUDA they share the device: worker/process/runtime.py), its
    share of the cores, where its metrics go, when it is recycled; and that it is supervised (it never starts
    children of its own). `server`: the one Redis of a fleet it serves."""
    env = dict(os.environ)
    if server is not None:
        env["LABELQ_REDIS_URL"] = server
        env["LABELQ_REDIS_SHARDS"] = ""  # empty: none, so the child is a worker of that one server
    env["LABELQ_WORKER_PROCESSES"] = str(processes)
    env[SUPERVISED_ENV] = "1"
    for name, value in (
        ("LABELQ_MAX_TASKS_PER_CHILD", settings and settings.max_tasks_per_child),
        ("LABELQ_MAX_MEMORY_PER_CHILD", settings and settings.max_memory_per_child),
    ):
        if value:
            env[name] = str(value)
    if metrics_dir:
        env["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # children write, the parent serves the sum
        env["LABELQ_METRICS_PORT"] = "0"
    if not env.get("LABELQ_INTRA_OP_THREADS"):
        env["LABELQ_INTRA_OP_THREADS"] = str(max(1, (os.cpu_count() or 1) // processes))
    return env


def run_processes(
    settings: Settings, *, loglevel: str, hostname: str, command: Callable[[int], list[str]] | None = None
) -> int:
    """Run single-process workers as children and keep them running: a child that exits while the host is not
    stopping is replaced (logged, and counted in `labelq_worker_process_restarts_total`), after a pause that
    grows while replacements keep dying young; a child that exits to be recycled (LABELQ_MAX_TASKS_PER_CHILD,
    LABELQ_MAX_MEMORY_PER_CHILD) is replaced at once. Serves the children's metrics; forwards SIGINT, SIGTERM
    and SIGQUIT, then returns the worst exit code of the last children. `command`: a child's arguments to
    Python (default: `labelq worker --in-process`)."""
    from worker.logs import configure_logging

    configure_logging(settings, loglevel)
    metrics_dir = tempfile.mkdtemp(prefix="labelq-metrics-") if settings.metrics_port else None
    servers = settings.redis_urls()
    fleet = len(servers) > 1
    per_server = settings.worker_processes or 1
    processes = per_server * len(servers)
    envs = [child_environment(processes, metrics_dir, settings, url if fleet else None) for url in servers]
    recycled = [
        f"after {n} {what}"
        for n, what in ((settings.max_tasks_per_child, "tasks"), (settings.max_memory_per_child, "KiB resident"))
        if n
    ]
    log.info(
        "labelq: %d worker process(es), one model session each%s%s",
        processes,
        f", {per_server} for each of {len(servers)} Redis servers" if fleet else "",
        f", each replaced {' or '.join(recycled)}" if recycled else "",
    )

    def labelq_worker(index: int) -> list[str]:
        server, own = divmod(index, per_server)
        name = hostname.replace("@", f"-s{server}-{own}@" if fleet else f"-{index}@", 1)
        return ["-m", "labelq.cli", "worker", "--in-process", "--loglevel", loglevel, "--hostname", name]

    def spawn(index: int) -> subprocess.Popen[bytes]:
        # no thread of ours runs yet when the first children start (preexec_fn needs that); the metrics server's
        # thread only serves, so a replacement forks safely too
        arguments = (command or labelq_worker)(index)
        env = envs[index // per_server]  # its server's
        return subprocess.Popen([sys.executable, *arguments], env=env, preexec_fn=_die_with_parent)

    children = [spawn(index) for index in range(processes)]
    stopping: list[int] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        stopping.append(signum)
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    try:
        if metrics_dir:
            from worker import metrics
            from worker.process.servers import servers_collector

            try:
                metrics.serve(settings.metrics_port, metrics_dir, servers_collector(settings) if fleet else None)
            except ConfigError:  # the port is taken: the children go too, before they load a model for nothing
                for child in children:
                    child.kill()
                    child.wait()
                raise
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            signal.signal(signum, forward)
        _supervise(children, spawn, stopping)
        return max(child.wait() for child in children)
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _supervise(
    children: list[subprocess.Popen[bytes]], spawn: Callable[[int], subprocess.Popen[bytes]], stopping: list[int]
) -> None:
    """Replace children that exit until a signal says stop (`stopping` gets one)."""
    from worker import metrics

    started = [time.monotonic()] * len(children)
    quick_deaths = [0] * len(children)
    while not stopping:
        for index, child in enumerate(children):
            code = child.poll()
            if code is None or stopping:
                continue
            lived_s = time.monotonic() - started[index]
            if code == EXIT_USAGE:  # a setting or flag it refused: every replacement would refuse it too
                log.error("worker process %d refused its configuration (exit 2); stopping the others", index)
                stopping.append(signal.SIGTERM)
                for other in children:
                    if other.poll() is None:
                        other.send_signal(signal.SIGTERM)
                return
            if code == EXIT_RECYCLE:  # it asked to be replaced: at once, and not a crash
                log.info(
                    "worker process %d (pid %d) recycled after %.0f s; starting its replacement",
                    index,
                    child.pid,
                    lived_s,
                )
                metrics.PROCESS_RECYCLES.inc()
                children[index] = spawn(index)
                started[index] = time.monotonic()
                continue
            quick = quick_deaths[index] = quick_deaths[index] + 1 if lived_s < RESTART_QUICK_DEATH_S else 0
            pause_s = min(RESTART_MAX_PAUSE_S, RESTART_BASE_PAUSE_S * 2**quick) if quick else 0.0
            log.error(
                "worker process %d (pid %d) exited with code %s after %.0f s; starting a replacement in %.0f s",
                index,
                child.pid,
                code,
                lived_s,
                pause_s,
            )
            metrics.PROCESS_RESTARTS.inc()
            _sleep_unless(stopping, pause_s)
            if stopping:
                break
            children[index] = spawn(index)
            started[index] = time.monotonic()
        _sleep_unless(stopping, SUPERVISE_POLL_S)


def _sleep_unless(stopping: list[int], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not stopping and time.monotonic() < deadline:
        time.sleep(min(SUPERVISE_POLL_S, max(0.0, deadline - time.monotonic())))


def _die_with_parent() -> None:
    """In a child: get SIGTERM (warm shutdown) if the parent dies, even by SIGKILL (Linux prctl)."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the parent forwards what it can catch
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def supervise_celery(settings: Settings, flags: WorkerFlags, *, hostname: str, loglevel: str, argv: list[str]) -> int:
    """`celery -A worker.celery_app worker -c N` (or with a recycling flag): this process supervises N children,
    each the same command line with `-c 1` and its own node name, as `labelq worker --processes N` does."""
    settings = settings.model_copy(
        update={
            "worker_processes": flags.processes,
            "max_tasks_per_child": flags.max_tasks_per_child,
            "max_memory_per_child": flags.max_memory_per_child_kb,
        }
    )
    return run_processes(
        settings,
        loglevel=loglevel,
        hostname=hostname,
        command=lambda index: ["-m", "celery", *child_argv(argv, index, hostname)],
    )
