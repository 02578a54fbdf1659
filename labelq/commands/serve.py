"""`labelq worker` and `labelq webhook-worker`: start worker processes (worker/launcher.py)."""

from __future__ import annotations

import sys

import click

from labelq.commands.options import (
    cli_settings,
)


@click.command("worker")
@click.option("--processes", type=int, default=None, help="Worker processes (default LABELQ_WORKER_PROCESSES, 1)")
@click.option("--loglevel", default="INFO", show_default=True)
@click.option("--hostname", default="labelq@%h", show_default=True, help="Celery node name")
def worker_command(processes: int | None, loglevel: str, hostname: str) -> None:
    """Run a streaming worker: consume the request queues in mini-batches, publish every result."""
    from worker import launcher
    from worker.connections import connect
    from worker.engine.onnx import run_defaults
    from worker.errors import ConfigError
    from worker.runtime import policies

    settings = cli_settings(worker_processes=processes)
    try:
        connect(settings)  # a Sentinel URL names its master (nothing connects yet)
        policies(settings, run_defaults(settings))  # the batch limits fit the visibility timeout on this device
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    if settings.worker_processes == 1:
        sys.exit(launcher.run_in_process(settings, loglevel=loglevel, hostname=hostname))
    else:
        sys.exit(launcher.run_processes(settings, loglevel=loglevel, hostname=hostname))


@click.command("webhook-worker")
@click.option("--loglevel", default="INFO", show_default=True)
@click.option("--hostname", default="labelq-webhooks@%h", show_default=True, help="Celery node name")
def webhook_worker_command(loglevel: str, hostname: str) -> None:
    """Run a webhook delivery worker: signed POSTs, retries with backoff, dead letters (no model)."""
    from worker import launcher

    sys.exit(launcher.run_in_process(cli_settings(), loglevel=loglevel, hostname=hostname, role="webhooks"))
