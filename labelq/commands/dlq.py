"""`labelq dlq`: the dead-letter list (worker/ops/dlq.py)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from labelq.commands.options import (
    REDIS_URL_OPTION,
    broker,
    producer,
)


def _letters(client: Any, reason: str | None = None) -> tuple[list[tuple[str, dict[str, Any]]], bool]:
    """(the dead letters (of `reason`), whether any item was skipped): an item of the list that is no dead letter
    is named on stderr, one line each, and left where it is; the command then exits 1 (a partial listing)."""
    from schemas.transport import DEAD_LETTER_KEY
    from worker.ops import dlq as dead

    skipped: list[tuple[int, bytes, str]] = []
    rows = dead.read(client, reason, skipped)
    for index, raw, why in skipped:
        click.echo(
            f"skipped item {index} of {DEAD_LETTER_KEY}: not a dead letter ({why}): {raw[:60]!r}; look at it with "
            f"`redis-cli LINDEX {DEAD_LETTER_KEY} {index}`",
            err=True,
        )
    return rows, bool(skipped)


def _dead_letters(redis_url: str) -> Any:
    """A client of the broker whose dead-letter list is a list (or absent): another Redis type there is one line
    naming it, exit 2, as a queue of the wrong type is (not Redis "refusing the command")."""
    from schemas.transport import DEAD_LETTER_KEY
    from worker.connections import WRONG_TYPE_HINT
    from worker.errors import InputError

    client = broker(redis_url)
    kind = client.type(DEAD_LETTER_KEY)
    kind = kind.decode() if isinstance(kind, bytes) else str(kind)
    if kind not in ("list", "none"):
        raise InputError(f"key {DEAD_LETTER_KEY!r} is a {kind}, not a list; {WRONG_TYPE_HINT}")
    return client


@click.group()
def dlq() -> None:
    """The dead-letter list: what labelq gave up on, with the reason and the raw content."""


@dlq.command("list")
@click.option("--reason", default=None, help="Only dead letters of this reason")
@click.option("--limit", default=20, show_default=True, help="Rows to print (newest last); counts cover all")
@REDIS_URL_OPTION
def dlq_list(reason: str | None, limit: int, redis_url: str) -> None:
    """Counts by reason, then the most recent dead letters. An item of the list that is no dead letter is named on
    stderr and skipped; the command then exits 1 (a partial listing)."""
    from collections import Counter

    rows, partial = _letters(_dead_letters(redis_url), reason)
    counts = Counter(letter.get("reason") for _, letter in rows)
    noun = "dead letter" if len(rows) == 1 else "dead letters"
    click.echo(f"{len(rows)} {noun}" + "".join(f"  {r}: {n}" for r, n in counts.most_common()))
    for _, letter in rows[-limit:] if limit else []:
        detail = str(letter.get("detail") or "")[:70]
        click.echo(f"{letter.get('id')}  {letter.get('reason'):<26} {letter.get('message_id') or '-':<36} {detail}")
    sys.exit(1 if partial else 0)


@dlq.command("show")
@click.argument("letter_id")
@REDIS_URL_OPTION
def dlq_show(letter_id: str, redis_url: str) -> None:
    """One dead letter, whole, as JSON."""

    from worker.ops import dlq as dead

    found = dead.find(_dead_letters(redis_url), letter_id)
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
    """Send dead letters again: requests to classification, webhook jobs to delivery (not re-classified). Exit 1
    when one was not replayed, or an item of the list was no dead letter (named on stderr, left where it is)."""
    from producer import WrongKeyType
    from worker.errors import InputError
    from worker.ops import dlq as dead

    if bool(letter_id) == replay_all:
        raise click.UsageError("give one LETTER_ID or --all")
    client = _dead_letters(redis_url)
    if letter_id:
        found = dead.find(client, letter_id)
        if found is None:
            click.echo(f"no dead letter {letter_id}", err=True)
            sys.exit(1)
        chosen, partial = [found], False
    else:
        chosen, partial = _letters(client, reason)
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
            except WrongKeyType as exc:  # every later one would fail alike; this one stays a dead letter
                raise InputError(f"{letter.get('id')}: not replayed: {exc}") from None
    sys.exit(1 if failures or partial else 0)


@dlq.command("purge")
@click.option("--reason", default=None, help="Only dead letters of this reason")
@click.option("--yes", is_flag=True, help="Do not ask")
@REDIS_URL_OPTION
def dlq_purge(reason: str | None, yes: bool, redis_url: str) -> None:
    """Delete dead letters (all, or of one reason)."""

    from worker.ops import dlq as dead

    if not yes:
        click.confirm(f"delete {'all' if reason is None else reason} dead letters?", abort=True)
    click.echo(f"purged {dead.purge(_dead_letters(redis_url) if reason else broker(redis_url), reason)}")
