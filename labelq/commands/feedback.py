"""`labelq feedback`: a moderator's verdict on a result, kept by the workers for `labelq labelsets refit`."""

from __future__ import annotations

import sys

import click

from labelq.commands.options import FLEET_URL_OPTION, producer


@click.command("feedback")
@click.argument("request_id")
@click.option("--labels", required=True, help="Comma-separated labels that apply ('' for none)")
@click.option("--text", required=True, help="The text that was classified (a result does not carry it)")
@click.option("--moderator", default=None, help="Who corrected it (kept with the correction)")
@click.option("--timeout", "timeout_s", default=30.0, show_default=True, help="Seconds to wait for a worker's answer")
@FLEET_URL_OPTION
def feedback(
    request_id: str, labels: str, text: str, moderator: str | None, timeout_s: float, redis_url: str | None
) -> None:
    """Correct the result of REQUEST_ID: which of its label set's labels apply. Exit 0 kept, 1 refused (the line
    says why: unknown id, unknown label, a set without a head) or no worker answered; 2 when the workers' task
    queue (labelq.tasks) is a Redis key of another type."""
    from pydantic import ValidationError

    from producer import WrongKeyType
    from schemas import CorrectionReceipt
    from worker.errors import InputError

    names = [name.strip() for name in labels.split(",") if name.strip()]
    with producer(redis_url) as client:
        try:
            outcome = client.correct(request_id, names, text, moderator=moderator, timeout_s=timeout_s)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise click.BadParameter(f"{where}: {first['msg']}") from None
        except WrongKeyType as exc:  # the workers' task queue is a key of another type: exit 2, not an outage
            raise InputError(f"the correction was not sent: {exc}") from None
    if outcome is None:
        click.echo(
            f"error: no worker answered within {timeout_s:g} s (is a labelq worker running?); the correction stays "
            "queued and is checked and kept when a worker takes it",
            err=True,
        )
        sys.exit(1)
    if isinstance(outcome, CorrectionReceipt):
        click.echo(
            f"kept: {outcome.label_set} (version {outcome.label_set_version} answered {outcome.request_id}) now keeps "
            f"{outcome.corrections} correction(s) (a refit uses the newest of each request)"
        )
        return
    click.echo(f"error {outcome.code.value} ({outcome.errors[0].field or '-'}): {outcome.message}", err=True)
    sys.exit(1)
