"""The `labelq` command: the top-level group, assembled from one module per command group (labelq/commands/)."""

from __future__ import annotations

import click

from labelq.commands import demo, dlq, evaluate, labelsets, local, models, queue, serve, status


@click.group()
@click.version_option(package_name="labelq")
def main() -> None:
    """labelq: zero-shot text classification as a streaming service on message queues."""


for command in (
    local.classify,
    local.classify_file,
    evaluate.eval_command,
    serve.worker_command,
    serve.webhook_worker_command,
    queue.submit,
    queue.submit_file,
    queue.results,
    status.workers,
    status.health,
    demo.demo,
    labelsets.labelsets,
    dlq.dlq,
    models.models,
):
    main.add_command(command)


if __name__ == "__main__":
    main()
