"""Starting worker processes: one Celery worker (pool solo) in this process, or N of them as children.

Each process holds one model session. With N processes and no explicit `LABELQ_INTRA_OP_THREADS`, each gets
cores // N onnxruntime threads, so N processes never oversubscribe the cores.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from types import FrameType

from worker.app import Role
from worker.settings import Settings

PR_SET_PDEATHSIG = 1  # linux/prctl.h
CELERY_WORKER_FLAGS = ["--without-mingle", "--without-gossip"]  # no neighbour sync: faster start, same semantics


def run_in_process(settings: Settings, *, loglevel: str, hostname: str, role: Role = "classify") -> None:
    from worker.app import create_app
    from worker.logs import configure_logging

    configure_logging(settings, loglevel)
    if settings.metrics_port:  # a child of run_processes gets port 0: its parent serves the host's endpoint
        from worker import metrics

        metrics.serve(settings.metrics_port)
    app = create_app(settings, role)
    app.worker_main(["worker", f"--loglevel={loglevel}", "-n", hostname, *CELERY_WORKER_FLAGS])


def child_environment(processes: int, metrics_dir: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if metrics_dir:
        env["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # children write, the parent serves the sum
        env["LABELQ_METRICS_PORT"] = "0"
    if not env.get("LABELQ_INTRA_OP_THREADS"):
        env["LABELQ_INTRA_OP_THREADS"] = str(max(1, (os.cpu_count() or 1) // processes))
    return env


def run_processes(settings: Settings, *, loglevel: str, hostname: str) -> int:
    """Run single-process workers as children; serve their metrics; forward SIGINT/SIGTERM; return the worst
    exit code."""
    processes = settings.worker_processes
    metrics_dir = tempfile.mkdtemp(prefix="labelq-metrics-") if settings.metrics_port else None
    env = child_environment(processes, metrics_dir)
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "labelq.cli",
                "worker",
                "--processes",
                "1",
                "--loglevel",
                loglevel,
                "--hostname",
                hostname.replace("@", f"-{index}@", 1),
            ],
            env=env,
            preexec_fn=_die_with_parent,  # no thread runs yet in this process (preexec_fn needs that)
        )
        for index in range(processes)
    ]
    if metrics_dir:
        from worker import metrics

        metrics.serve(settings.metrics_port, metrics_dir)

    def forward(signum: int, _frame: FrameType | None) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    try:
        return max(child.wait() for child in children)
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _die_with_parent() -> None:
    """In a child: get SIGTERM (warm shutdown) if the parent dies, even by SIGKILL (Linux prctl)."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the parent forwards what it can catch
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
