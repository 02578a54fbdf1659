"""`labelq labelsets`: named, versioned label sets in Redis (worker/stream/labelsets.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from labelq.commands.options import (
    REDIS_URL_OPTION,
    broker,
)


@click.group()
def labelsets() -> None:
    """Named, versioned label sets in Redis: requests name one (`label_set`) instead of listing labels."""


def _store(redis_url: str) -> Any:

    from worker.stream.labelsets import LabelSetStore

    return LabelSetStore(broker(redis_url))


@labelsets.command("put")
@click.argument("name")
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--thresholds-from",
    "thresholds_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Per-label thresholds as JSON (what `labelq eval --fit-thresholds` writes); they override",
)
@REDIS_URL_OPTION
def labelsets_put(name: str, source: Path, thresholds_file: Path | None, redis_url: str) -> None:
    """Store FILE.yaml as the next version of label set NAME; workers use it from their next batch."""
    from pydantic import ValidationError

    from worker.errors import InputError
    from worker.stream.labelsets import LabelSet

    thresholds = json.loads(thresholds_file.read_text()) if thresholds_file else None
    try:
        labelset = LabelSet.from_yaml(name, source.read_text(), thresholds)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the file"
        raise InputError(f"{source}: {where}: {first['msg']} (a label set is a mapping with a `labels` list)") from None
    except ValueError as exc:
        raise InputError(f"{source}: {exc}") from None
    version = _store(redis_url).put(labelset)
    click.echo(f"{name} version {version}: {len(labelset.labels)} labels")


@labelsets.command("get")
@click.argument("name")
@click.option("--version", type=int, default=None, help="A past version (default: the latest)")
@REDIS_URL_OPTION
def labelsets_get(name: str, version: int | None, redis_url: str) -> None:
    """Print a label set as YAML."""
    import yaml

    labelset = _store(redis_url).get(name, version)
    if labelset is None:
        click.echo(f"no label set {name}" + (f" version {version}" if version else ""), err=True)
        sys.exit(1)
    click.echo(yaml.safe_dump(labelset.model_dump(mode="json", exclude_none=True), sort_keys=False), nl=False)


@labelsets.command("list")
@REDIS_URL_OPTION
def labelsets_list(redis_url: str) -> None:
    """Every label set with its latest version and label count."""
    store = _store(redis_url)
    for name in store.names():
        labelset = store.get(name)
        if labelset is not None:
            click.echo(f"{name}  v{labelset.version}  {len(labelset.labels)} labels")


@labelsets.command("delete")
@click.argument("name")
@REDIS_URL_OPTION
def labelsets_delete(name: str, redis_url: str) -> None:
    """Delete a label set and all its versions."""
    if not _store(redis_url).delete(name):
        click.echo(f"no label set {name}", err=True)
        sys.exit(1)
    click.echo(f"deleted {name}")
