"""The `labelq` command: the top-level group, assembled from one module per command group (labelq/commands/)."""

from __future__ import annotations

import click

from labelq.commands import demo, dlq, evaluate, feedback, labelsets, local, models, queue, serve, status
from labelq.failures import ReportingGroup


@click.group(cls=ReportingGroup)
@click.version_option(package_name="labelq")
@click.option("--debug", is_flag=True, envvar="LABELQ_DEBUG", help="Show a failure's traceback (env LABELQ_DEBUG)")
def main(debug: bool) -> None:
    """labelq: zero-shot text classification as a streaming service on message queues.

    A failure is one line on stderr and an exit code (the table: README "Errors and exit codes"): 1 the
    command's own no or a partial listing, 2 usage or input, 3 Redis unreachable, 4 a model problem, 70 an
    internal error (--debug shows the traceback)."""


for command in (
    local.classify,
    local.classify_file,
    evaluate.eval_command,
    serve.worker_command,
    serve.webhook_worker_command,
    queue.submit,
    queue.submit_file,
    queue.results,
    queue.get,
    queue.wait,
    feedback.feedback,
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
