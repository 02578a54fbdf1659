"""`labelq classify` and `labelq classify-file`: the engine in this process, no queue."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from labelq.commands.options import (
    SHORTLIST_OPTION,
    local_engine,
    print_result,
    request_from_flags,
)
from schemas import ErrorResult


@click.command()
@click.argument("text")
@click.option("--labels", required=True, help="Comma-separated candidate labels")
@click.option("--multi-label", is_flag=True, help="Score each label independently")
@click.option("--template", default=None, help="Hypothesis template containing {}")
@click.option("--threshold", type=float, default=None, help="Accept labels at or above this score")
@click.option("--model", default=None, help="Model name or directory (default: the embedded MiniLM)")
@SHORTLIST_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (the wire format)")
def classify(
    text: str,
    labels: str,
    multi_label: bool,
    template: str | None,
    threshold: float | None,
    model: str | None,
    shortlist: int | None,
    as_json: bool,
) -> None:
    """Classify TEXT against candidate labels, locally (no queue)."""
    message = request_from_flags(text, labels, multi_label, template, thresholds=threshold, shortlist=shortlist)
    outcome = local_engine(model).classify_raw([json.dumps(message)])[0]
    print_result(outcome, as_json)
    sys.exit(1 if isinstance(outcome, ErrorResult) else 0)


@click.command("classify-file")
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "target", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--model", default=None, help="Model name or directory")
@click.option("--batch-size", default=32, show_default=True, help="Requests per engine call")
def classify_file(source: Path, target: Path, model: str | None, batch_size: int) -> None:
    """Classify every request in SOURCE (JSON lines, the wire format) into OUT (one result per line)."""
    engine = local_engine(model)
    lines = source.read_bytes().splitlines()
    counts = {"ok": 0, "error": 0}
    with target.open("w", encoding="utf-8") as out, click.progressbar(length=len(lines), label="classifying") as bar:
        for start in range(0, len(lines), batch_size):
            for outcome in engine.classify_raw([line for line in lines[start : start + batch_size] if line.strip()]):
                counts[outcome.status] += 1
                out.write(outcome.model_dump_json() + "\n")
            bar.update(len(lines[start : start + batch_size]))
    click.echo(f"{counts['ok']} classified, {counts['error']} errors -> {target}")
