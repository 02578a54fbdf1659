"""`labelq worker` and `labelq webhook-worker`: start worker processes (worker/process/main.py, launcher.py)."""

from __future__ import annotations

import sys

import click

from labelq.commands.options import (
    cli_settings,
)


@click.command("worker")
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes (default LABELQ_WORKER_PROCESSES; unset: 1 on a CPU, 4 sharing a CUDA device)",
)
@click.option(
    "--max-tasks-per-child",
    type=click.IntRange(min=1),
    default=None,
    help="Replace a process after this many classifications (default LABELQ_MAX_TASKS_PER_CHILD; unset: never)",
)
@click.option(
    "--max-memory-per-child",
    type=click.IntRange(min=1),
    default=None,
    help="Replace a process once its resident memory passes this many KiB (default LABELQ_MAX_MEMORY_PER_CHILD)",
)
@click.option("--loglevel", default="INFO", show_default=True)
@click.option("--hostname", default="labelq@%h", show_default=True, help="Celery node name")
@click.option("--in-process", "in_process", is_flag=True, hidden=True, help="One of run_processes' children")
def worker_command(
    processes: int | None,
    max_tasks_per_child: int | None,
    max_memory_per_child: int | None,
    loglevel: str,
    hostname: str,
    in_process: bool,
) -> None:
    """Run a streaming worker: consume the request queues in mini-batches, publish every result."""
    from worker.connections import check_access, connect
    from worker.engine.engine import check_model
    from worker.engine.onnx import run_defaults
    from worker.process import launcher, main
    from worker.process.app import check_imports
    from worker.process.runtime import policies

    settings = cli_settings(
        worker_processes=processes,
        max_tasks_per_child=max_tasks_per_child,
        max_memory_per_child=max_memory_per_child,
    )
    runs = run_defaults(settings)
    if settings.worker_processes is None and runs.cuda and not in_process:
        click.echo(
            f"CUDA: {runs.worker_processes} worker processes, each with its own session on the one device, so the "
            "GPU runs while each does its Python (LABELQ_WORKER_PROCESSES or --processes to change)",
            err=True,
        )
    settings = settings.model_copy(update={"worker_processes": runs.worker_processes})
    check_model(settings)  # not installed: one line, exit 4 (labelq/failures.py), before anything starts
    # each a ConfigError, one line and exit 2 (labelq/failures.py), before any model loads; a fleet's every server
    # (one that does not answer is left to its workers' retries: the others start)
    servers = settings.redis_urls()
    for url in servers:
        connect(settings.for_server(url))  # a Sentinel URL names its master (nothing connects yet)
        check_access(settings.for_server(url))  # a missing ACL grant is one line now, not a crash once consuming
    check_imports(settings.celery_imports)
    policies(settings, runs)  # the batch limits fit the visibility timeout on this device
    recycled = bool(settings.max_tasks_per_child or settings.max_memory_per_child)  # a parent replaces a process
    alone = settings.worker_processes == 1 and not recycled and len(servers) == 1  # else one group a server
    if in_process or alone:  # a child knows its siblings' count
        sys.exit(main.run_in_process(settings, loglevel=loglevel, hostname=hostname))
    else:
        sys.exit(launcher.run_processes(settings, loglevel=loglevel, hostname=hostname))


@click.command("webhook-worker")
@click.option("--loglevel", default="INFO", show_default=True)
@click.option("--hostname", default="labelq-webhooks@%h", show_default=True, help="Celery node name")
def webhook_worker_command(loglevel: str, hostname: str) -> None:
    """Run a webhook delivery worker: signed POSTs, retries with backoff, dead letters (no model). Over several
    Redis servers (LABELQ_REDIS_SHARDS): one for each server, supervised, named <name>-s<K>@host."""
    from worker.connections import check_access
    from worker.process import launcher, main

    settings = cli_settings()
    servers = settings.redis_urls()
    for url in servers:
        check_access(settings.for_server(url))  # a ConfigError: one line, exit 2
    if len(servers) == 1:
        sys.exit(main.run_in_process(settings, loglevel=loglevel, hostname=hostname, role="webhooks"))

    def one_server(index: int) -> list[str]:  # the launcher gives each its server's LABELQ_REDIS_URL
        name = hostname.replace("@", f"-s{index}@", 1)
        return ["-m", "labelq.cli", "webhook-worker", "--loglevel", loglevel, "--hostname", name]

    single = settings.model_copy(
        update={"worker_processes": 1, "max_tasks_per_child": None, "max_memory_per_child": None}
    )
    sys.exit(launcher.run_processes(single, loglevel=loglevel, hostname=hostname, command=one_server))
