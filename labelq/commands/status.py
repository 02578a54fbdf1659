"""`labelq workers` and `labelq health`: which workers are ready, and whether the whole is healthy."""

from __future__ import annotations

import json
import sys

import click

from labelq.commands.options import (
    REDIS_URL_OPTION,
    cli_settings,
    producer,
)


@click.command()
@click.option("--node", default=None, help="Only this node (e.g. labelq@host); exit 1 unless it is ready")
@REDIS_URL_OPTION
def workers(node: str | None, redis_url: str) -> None:
    """List ready workers (model loaded, consuming); exit 1 when none (or not NODE) is ready, or when a worker
    record could not be read (each is named on stderr and skipped: a partial listing)."""

    with producer(redis_url) as client:
        ready, unreadable = client.read_workers()
    if node is not None:
        ready = {name: info for name, info in ready.items() if name == node}
    for name, info in sorted(ready.items()):
        click.echo(f"{name}  {info['model']}@{info['revision']}  pid {info['pid']}  {', '.join(info['queues'])}")
    for key, why in sorted(unreadable.items()):
        click.echo(f"skipped {key}: {why} (not a worker record; delete it if no worker owns it)", err=True)
    if not ready:
        click.echo("no ready worker" + (f" named {node}" if node else ""), err=True)
    sys.exit(1 if unreadable or not ready else 0)


@click.command()
@click.option("--json", "as_json", is_flag=True)
@REDIS_URL_OPTION
def health(as_json: bool, redis_url: str) -> None:
    """Redis reachable, workers ready (model, revision) and answering a ping, one model per queue, queue depths.
    Exit 0 healthy; 1 unhealthy (no ready worker, different models on one queue, an unreadable worker record);
    2 a queue's key holds another Redis type; 3 Redis unreachable."""
    from labelq.health import WRONG_KEY_TYPE, check
    from worker.connections import WRONG_TYPE_HINT

    report = check(redis_url, transport_options=cli_settings().redis_transport_options)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        sys.exit(report.status)
    click.echo(f"redis: {report.redis}")
    if report.status == WRONG_KEY_TYPE:
        for line in report.wrong_keys:
            click.echo(f"error: {line}; {WRONG_TYPE_HINT}", err=True)
        sys.exit(report.status)
    for name, info in sorted(report.workers.items()):
        answered = "answers ping" if name in report.pinged else "no ping reply"
        click.echo(f"worker {name}: {info['model']}@{info['revision']}, pid {info['pid']}, {answered}")
    others = [name for name in report.pinged if name not in report.workers]
    if others:
        click.echo(f"other Celery nodes answering: {', '.join(others)}")
    if report.depths:
        click.echo("queues: " + ", ".join(f"{k} {v}" for k, v in report.depths.items()))
    for problem in report.problems:
        click.echo(f"unhealthy: {problem}", err=True)
    click.echo(report.verdict)
    sys.exit(report.status)
