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
    """List ready workers (model loaded, consuming); exit 1 when none (or not NODE) is ready."""

    with producer(redis_url) as client:
        ready = client.workers()
    if node is not None:
        ready = {name: info for name, info in ready.items() if name == node}
    for name, info in sorted(ready.items()):
        click.echo(f"{name}  {info['model']}@{info['revision']}  pid {info['pid']}  {', '.join(info['queues'])}")
    if not ready:
        click.echo("no ready worker" + (f" named {node}" if node else ""), err=True)
        sys.exit(1)


@click.command()
@click.option("--json", "as_json", is_flag=True)
@REDIS_URL_OPTION
def health(as_json: bool, redis_url: str) -> None:
    """Redis reachable, workers ready (model, revision) and answering a ping, queue depths.
    Exit 0 healthy, 1 no ready worker, 2 Redis unreachable."""
    from labelq.health import check

    report = check(redis_url, transport_options=cli_settings().redis_transport_options)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        sys.exit(report.status)
    click.echo(f"redis: {report.redis}")
    for name, info in sorted(report.workers.items()):
        answered = "answers ping" if name in report.pinged else "no ping reply"
        click.echo(f"worker {name}: {info['model']}@{info['revision']}, pid {info['pid']}, {answered}")
    others = [name for name in report.pinged if name not in report.workers]
    if others:
        click.echo(f"other Celery nodes answering: {', '.join(others)}")
    if report.depths:
        click.echo("queues: " + ", ".join(f"{k} {v}" for k, v in report.depths.items()))
    click.echo(report.to_dict()["status"])
    sys.exit(report.status)
