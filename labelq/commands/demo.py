"""`labelq demo`: end to end on a fresh machine (labelq/demo.py)."""

from __future__ import annotations

import sys

import click


@click.command()
@click.option("--count", default=24, show_default=True, help="Requests to send")
@click.option("--timeout", "timeout_s", default=180.0, show_default=True)
def demo(count: int, timeout_s: float) -> None:
    """End to end on a fresh machine: a Redis (LABELQ_REDIS_URL, else a private one), a worker, a mix of moderation and
    routing requests, results printed as they arrive, then everything shut down."""
    from labelq.demo import run_demo

    sys.exit(run_demo(count=count, timeout_s=timeout_s))
