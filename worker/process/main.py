"""One Celery worker in this process: `run_in_process` (what `labelq worker` runs, and each supervised child)."""

from __future__ import annotations

from worker.constants import Role
from worker.settings import Settings

CELERY_WORKER_FLAGS = ["--without-mingle", "--without-gossip"]  # no neighbour sync: faster start, same semantics


def run_in_process(settings: Settings, *, loglevel: str, hostname: str, role: Role = "classify") -> int:
    """Run one Celery worker here until it stops; its exit code (non-zero when it stopped on an error: Celery's
    `worker_main` would swallow that code and exit 0, which a supervisor reads as a clean stop)."""
    from worker.logs import configure_logging
    from worker.process.app import create_app

    configure_logging(settings, loglevel)
    if settings.metrics_port:  # a child of run_processes gets port 0: its parent serves the host's endpoint
        from worker import metrics

        metrics.serve(settings.metrics_port)
    app = create_app(settings, role)
    # what `app.worker_main` does, keeping the exit code it drops (`app.start` discards click's return value)
    from celery.bin.celery import celery as celery_command

    celery_command.params[0].default = app
    try:
        argv = ["worker", f"--loglevel={loglevel}", "-n", hostname, *CELERY_WORKER_FLAGS]
        code = celery_command.main(args=argv, standalone_mode=False)
    finally:
        celery_command.params[0].default = None
    return code if isinstance(code, int) else 0
