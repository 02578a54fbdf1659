"""`labelq workers` and `labelq health`: which workers are ready, and whether the whole is healthy; over every Redis
server of the fleet (LABELQ_REDIS_SHARDS) when there are several."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from labelq.commands.options import (
    FLEET_URL_OPTION,
    cli_settings,
    fleet_urls,
    producer,
)


@click.command()
@click.option("--node", default=None, help="Only this node (e.g. labelq@host); exit 1 unless it is ready")
@FLEET_URL_OPTION
def workers(node: str | None, redis_url: str | None) -> None:
    """List ready workers (model loaded, consuming); exit 1 when none (or not NODE) is ready, or when a worker
    record could not be read (each is named on stderr and skipped: a partial listing). Over several Redis servers
    each line ends with its server's name; a server that does not answer, or has no ready worker, is named on
    stderr (exit 1; exit 3 when none answers)."""
    urls = fleet_urls(redis_url)
    if len(urls) == 1:
        with producer(urls[0]) as client:
            ready, unreadable = client.read_workers()
        down: list[str] = []
    else:
        ready, unreadable, down = _fleet_workers(urls)
    if node is not None:
        ready = {name: info for name, info in ready.items() if name == node}
    for name, info in sorted(ready.items()):
        where = f"  {info['redis']}" if "redis" in info else ""
        click.echo(f"{name}  {info['model']}@{info['revision']}  pid {info['pid']}  {', '.join(info['queues'])}{where}")
    for key, why in sorted(unreadable.items()):
        click.echo(f"skipped {key}: {why} (not a worker record; delete it if no worker owns it)", err=True)
    for line in down:
        click.echo(f"error: {line}", err=True)
    if not ready:
        click.echo("no ready worker" + (f" named {node}" if node else ""), err=True)
    if sum("unreachable" in line for line in down) == len(urls):
        sys.exit(3)  # no server answered: Redis unreachable, as with one server
    sys.exit(1 if unreadable or down or not ready else 0)


def _fleet_workers(urls: tuple[str, ...]) -> tuple[dict[str, dict[str, Any]], dict[str, str], list[str]]:
    """Ready workers and unreadable records over every server, and a line for each server that did not answer."""
    from producer.client import BROKER_ERRORS

    ready: dict[str, dict[str, Any]] = {}
    unreadable: dict[str, str] = {}
    down: list[str] = []
    with producer(urls) as client:
        for name, server in zip(client.names, client.servers, strict=True):
            try:
                found, bad = server.read_workers()
            except BROKER_ERRORS as exc:
                down.append(f"Redis at {name} unreachable ({exc}); its workers are not listed")
                continue
            if not found:  # its share of the requests waits: said, and the listing is not the whole fleet's
                down.append(f"no ready worker on Redis at {name}: the requests whose home it is wait")
            for node, record in found.items():
                ready[node if node not in ready else f"{node} ({name})"] = {**record, "redis": name}
            unreadable |= {f"{key} ({name})": why for key, why in bad.items()}
    return ready, unreadable, down


@click.command()
@click.option("--json", "as_json", is_flag=True)
@FLEET_URL_OPTION
def health(as_json: bool, redis_url: str | None) -> None:
    """Redis reachable, workers ready (model, revision) and answering a ping, one model per queue, queue depths.
    Exit 0 healthy; 1 unhealthy (no ready worker, different models on one queue, an unreadable worker record; over
    several Redis servers, also some of them unreachable or without a ready worker); 2 a queue's key holds another
    Redis type; 3 Redis unreachable (every server)."""
    from labelq.health import WRONG_KEY_TYPE, check, check_fleet

    urls = fleet_urls(redis_url)
    options = cli_settings().redis_transport_options
    if len(urls) > 1:
        _fleet_health(check_fleet(urls, transport_options=options), as_json)
    report = check(urls[0], transport_options=options)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        sys.exit(report.status)
    click.echo(f"redis: {report.redis}")
    if report.status == WRONG_KEY_TYPE:
        _wrong_keys(report.wrong_keys)
        sys.exit(report.status)
    _server_lines(report, indent="")
    for problem in report.problems:
        click.echo(f"unhealthy: {problem}", err=True)
    click.echo(report.verdict)
    sys.exit(report.status)


def _fleet_health(fleet: Any, as_json: bool) -> None:
    """Print a fleet's health, a block per server, and exit with its status."""
    from labelq.health import REDIS_DOWN, UNHEALTHY, WRONG_KEY_TYPE

    if as_json:
        click.echo(json.dumps(fleet.to_dict(), indent=2))
        sys.exit(fleet.status)
    for name, report in fleet.servers.items():
        click.echo(f"server {name}: redis {report.redis}")
        if report.status == WRONG_KEY_TYPE:
            _wrong_keys(report.wrong_keys)
            continue
        _server_lines(report, indent="  ")
        for problem in report.problems:
            click.echo(f"unhealthy ({name}): {problem}", err=True)
        if report.status == UNHEALTHY and not report.workers:
            click.echo(f"unhealthy ({name}): no ready worker: requests sent to this server wait", err=True)
        if report.status == REDIS_DOWN:
            click.echo(f"unhealthy ({name}): unreachable: requests sent to this server wait for it", err=True)
    for problem in fleet.problems:
        click.echo(f"unhealthy: {problem}", err=True)
    click.echo(fleet.verdict)
    sys.exit(fleet.status)


def _server_lines(report: Any, indent: str) -> None:
    for name, info in sorted(report.workers.items()):
        answered = "answers ping" if name in report.pinged else "no ping reply"
        click.echo(f"{indent}worker {name}: {info['model']}@{info['revision']}, pid {info['pid']}, {answered}")
    others = [name for name in report.pinged if name not in report.workers]
    if others:
        click.echo(f"{indent}other Celery nodes answering: {', '.join(others)}")
    if report.depths:
        click.echo(f"{indent}queues: " + ", ".join(f"{k} {v}" for k, v in report.depths.items()))


def _wrong_keys(lines: list[str]) -> None:
    from worker.connections import WRONG_TYPE_HINT

    for line in lines:
        click.echo(f"error: {line}; {WRONG_TYPE_HINT}", err=True)
