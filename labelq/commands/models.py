"""`labelq models`: install, list, quantise and verify model directories (worker/ops/management.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from labelq.commands.options import (
    cli_settings,
)


@click.group()
def models() -> None:
    """Install, list, quantise and verify models."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True)
def models_list(as_json: bool) -> None:
    """The models this machine has (the embedded default and those under LABELQ_MODELS_DIR)."""
    from worker.ops.management import installed_models

    rows = installed_models(cli_settings())
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        flag = "*" if row["default"] else " "
        detail = row.get("error") or f"{row['kind']:<9} {row['revision']}  {row['file']}"
        click.echo(f"{flag} {row['name']:<55} {detail}")


@models.command("pull")
@click.argument("repo")
@click.option("--revision", default=None, help="A branch, tag or commit of the Hub repo")
def models_pull(repo: str, revision: str | None) -> None:
    """Download a zero-shot model from the Hugging Face Hub (needs network and the `hub` extra)."""
    from worker.ops.management import hub_downloader, pull

    card = pull(repo, cli_settings().models_dir, hub_downloader, revision)
    click.echo(f"installed {card.name}@{card.revision} ({card.kind}) -> {card.onnx_path.parent.parent}")


@models.command("quantize")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
def models_quantize(directory: Path) -> None:
    """Write onnx/model_quantized.onnx (dynamic int8) and report agreement with fp32 on a sample."""
    from worker.ops.management import quantize

    result = quantize(directory)
    click.echo(f"wrote {directory / 'onnx' / 'model_quantized.onnx'}")
    click.echo(
        f"int8 vs fp32 on {result.pairs} label scores: max |diff| {result.max_abs_diff:.4f}, "
        f"mean |diff| {result.mean_abs_diff:.4f}, same top label {result.top1_agreement:.0%}"
    )


@models.command("verify")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--write", is_flag=True, help="Write (or rewrite) the sha256 manifest instead of checking it")
@click.option("--repo", default=None, help="With --write: the repo name to record")
def models_verify(directory: Path, write: bool, repo: str | None) -> None:
    """Check a model directory's files against its sha256 manifest (labelq-manifest.json)."""
    from worker.engine.models import describe_directory
    from worker.ops.management import verify_manifest, write_manifest

    card = describe_directory(directory)
    if write:
        manifest = write_manifest(directory, repo=repo or card.name, revision=card.revision)
        click.echo(f"wrote manifest of {len(manifest['files'])} files")  # type: ignore[arg-type]
        return
    problems = verify_manifest(directory)
    for problem in problems:
        click.echo(problem, err=True)
    if problems:
        sys.exit(1)
    click.echo(f"ok: {card.name}@{card.revision} ({card.kind}, max length {card.max_length})")
