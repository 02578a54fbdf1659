"""`labelq dlq`: the dead-letter list (worker/ops/dlq.py)."""

from __future__ import annotations

import json
import sys

import click

from labelq.commands.options import (
    REDIS_URL_OPTION,
    broker,
    producer,
)


@click.group()
def dlq() -> None:
    """The dead-letter list: what labelq gave up on, with the reason and the raw content."""


@dlq.command("list")
@click.option("--reason", default=None, help="Only dead letters of this reason")
@click.option("--limit", default=20, show_default=True, help="Rows to print (newest last); counts cover all")
@REDIS_URL_OPTION
def dlq_list(reason: str | None, limit: int, redis_url: str) -> None:
    """Counts by reason, then the most recent dead letters."""
    from collections import Counter

    from worker.ops import dlq as dead

    rows = dead.read(broker(redis_url), reason)
    counts = Counter(letter.get("reason") for _, letter in rows)
    click.echo(f"{len(rows)} dead letters" + "".join(f"  {r}: {n}" for r, n in counts.most_common()))
    for _, letter in rows[-limit:] if limit else []:
        detail = str(letter.get("detail") or "")[:70]
        click.echo(f"{letter.get('id')}  {letter.get('reason'):<26} {letter.get('message_id') or '-':<36} {detail}")


@dlq.command("show")
@click.argument("letter_id")
@REDIS_URL_OPTION
def dlq_show(letter_id: str, redis_url: str) -> None:
    """One dead letter, whole, as JSON."""

    from worker.ops import dlq as dead

    found = dead.find(broker(redis_url), letter_id)
    if found is None:
        click.echo(f"no dead letter {letter_id}", err=True)
        sys.exit(1)
    click.echo(json.dumps(found[1], indent=2))


@dlq.command("replay")
@click.argument("letter_id", required=False)
@click.option("--all", "replay_all", is_flag=True, help="Replay every dead letter (of --reason, if given)")
@click.option("--reason", default=None)
@REDIS_URL_OPTION
def dlq_replay(letter_id: str | None, replay_all: bool, reason: str | None, redis_url: str) -> None:
    """Send dead letters again: requests to classification, webhook jobs to delivery (not re-classified)."""

    from worker.ops import dlq as dead

    if bool(letter_id) == replay_all:
        raise click.UsageError("give one LETTER_ID or --all")
    client = broker(redis_url)
    if letter_id:
        found = dead.find(client, letter_id)
        if found is None:
            click.echo(f"no dead letter {letter_id}", err=True)
            sys.exit(1)
        chosen = [found]
    else:
        chosen = dead.read(client, reason)
    failures = 0
    with producer(redis_url) as sender:

        def submit(request_json: str, queue: str) -> str:
            request_id: str = sender.submit(json.loads(request_json), queue=queue)
            return request_id

        for text, letter in chosen:
            try:
                click.echo(f"{letter.get('id')}: {dead.replay(client, text, letter, submit)}")
            except (dead.NotReplayable, ValueError) as exc:
                failures += 1
                click.echo(f"{letter.get('id')}: not replayed: {exc}", err=True)
    sys.exit(1 if failures else 0)


@dlq.command("purge")
@click.option("--reason", default=None, help="Only dead letters of this reason")
@click.option("--yes", is_flag=True, help="Do not ask")
@REDIS_URL_OPTION
def dlq_purge(reason: str | None, yes: bool, redis_url: str) -> None:
    """Delete dead letters (all, or of one reason)."""

    from worker.ops import dlq as dead

    if not yes:
        click.confirm(f"delete {'all' if reason is None else reason} dead letters?", abort=True)
    click.echo(f"purged {dead.purge(broker(redis_url), reason)}")
