"""Starting worker processes: one Celery worker (pool solo) in this process, or N of them as children.

Each process holds one model session. With N processes and no explicit `LABELQ_INTRA_OP_THREADS`, each gets
cores // N onnxruntime threads, so N processes never oversubscribe the cores.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from types import FrameType

from worker.app import Role
from worker.settings import Settings

CELERY_WORKER_FLAGS = ["--without-mingle", "--without-gossip"]  # no neighbour sync: faster start, same semantics


def run_in_process(settings: Settings, *, loglevel: str, hostname: str, role: Role = "classify") -> None:
    from worker.app import create_app
    from worker.logs import configure_logging

    configure_logging(settings, loglevel)
    app = create_app(settings, role)
    app.worker_main(["worker", f"--loglevel={loglevel}", "-n", hostname, *CELERY_WORKER_FLAGS])


def child_environment(processes: int) -> dict[str, str]:
    env = dict(os.environ)
    if not env.get("LABELQ_INTRA_OP_THREADS"):
        env["LABELQ_INTRA_OP_THREADS"] = str(max(1, (os.cpu_count() or 1) // processes))
    return env


def run_processes(processes: int, *, loglevel: str, hostname: str) -> int:
    """Run `processes` single-process workers as children; forward SIGINT/SIGTERM; return the worst exit code."""
    env = child_environment(processes)
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
        )
        for index in range(processes)
    ]

    def forward(signum: int, _frame: FrameType | None) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    return max(child.wait() for child in children)
