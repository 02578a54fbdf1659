"""`labelq submit`, `labelq submit-file` and `labelq results`: sending requests and reading results through
the producer's `Client`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from labelq.commands.options import (
    REDIS_URL_OPTION,
    print_result,
    producer,
    request_from_flags,
)
from schemas import ErrorResult, parse_request


@click.command()
@click.argument("text")
@click.option("--labels", default=None, help="Comma-separated candidate labels (or --label-set)")
@click.option("--label-set", default=None, help="The name of a label set stored on the workers, instead of --labels")
@click.option("--multi-label", is_flag=True)
@click.option("--template", default=None, help="Hypothesis template containing {}")
@click.option("--reply-to", default=None, help="Result queue (a Redis list) to push the result onto")
@click.option("--queue", type=click.Choice(["realtime", "bulk"]), default="realtime", show_default=True)
@click.option("--wait", is_flag=True, help="Wait for the result and print it")
@click.option("--timeout", "timeout_s", default=30.0, show_default=True, help="Seconds to wait with --wait")
@REDIS_URL_OPTION
def submit(
    text: str,
    labels: str | None,
    label_set: str | None,
    multi_label: bool,
    template: str | None,
    reply_to: str | None,
    queue: str,
    wait: bool,
    timeout_s: float,
    redis_url: str,
) -> None:
    """Send one request to the workers; print its id (or, with --wait, its result)."""
    from pydantic import ValidationError

    from schemas import error_from_validation

    with producer(redis_url) as client:
        try:
            request_id = client.submit(
                request_from_flags(text, labels, multi_label, template, reply_to=reply_to, label_set=label_set),
                queue=queue,
            )
        except ValidationError as exc:  # one line on stderr, as every command's refusal is
            print_result(error_from_validation(exc, None), as_json=False)
            sys.exit(1)
        if not wait:
            click.echo(request_id)
            return
        result = client.wait(request_id, timeout_s)
    if result is None:
        click.echo(f"no result for {request_id} within {timeout_s:g} s", err=True)
        sys.exit(2)
    click.echo(result.model_dump_json(indent=2))
    sys.exit(1 if isinstance(result, ErrorResult) else 0)


@click.command("submit-file")
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--queue", type=click.Choice(["realtime", "bulk"]), default="bulk", show_default=True)
@click.option("--reply-to", default=None, help="Result queue for lines that name none")
@REDIS_URL_OPTION
def submit_file(source: Path, queue: str, reply_to: str | None, redis_url: str) -> None:
    """Send every request in SOURCE (JSON lines, the wire format); invalid lines are reported, not sent, and the
    command exits 1 when there was any."""

    lines = [line for line in source.read_bytes().splitlines() if line.strip()]
    sent, rejected = 0, []
    with producer(redis_url) as client, click.progressbar(lines, label="submitting", file=sys.stderr) as bar:
        for number, line in enumerate(bar, 1):
            parsed = parse_request(line)
            if isinstance(parsed, ErrorResult):
                rejected.append(f"line {number}: {parsed.code.value} ({parsed.field}): {parsed.message}")
                continue
            request = parsed.request
            if reply_to and request.reply_to is None:
                request = request.model_copy(update={"reply_to": reply_to})
            client.submit(request, queue=queue)
            sent += 1
    for problem in rejected:
        click.echo(problem, err=True)
    click.echo(f"{sent} submitted to {queue}, {len(rejected)} rejected")
    sys.exit(1 if rejected else 0)  # a file with a bad line is not a success, though the good lines were sent


@click.command()
@click.argument("reply_queue")
@click.option("--follow", is_flag=True, help="Keep waiting for new results")
@REDIS_URL_OPTION
def results(reply_queue: str, follow: bool, redis_url: str) -> None:
    """Print (and take off) the results on a result queue, one JSON line each. An item that is not a labelq result
    stops the command (exit 1) and stays at the head of the queue; a name that is no result queue is exit 2."""
    from producer import UnreadableResult
    from worker.errors import InputError

    with producer(redis_url) as client:
        try:
            for result in client.results(reply_queue, follow=follow):
                click.echo(result.model_dump_json())
        except UnreadableResult as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except ValueError as exc:  # not a name a result queue may have, or a key of another type
            raise InputError(f"{exc}; name the result queue your requests give as reply_to") from None
