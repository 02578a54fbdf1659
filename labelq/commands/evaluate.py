"""`labelq eval`: accuracy, macro-F1 and confusions of a model on labelled data (worker/ops/evaluation.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from labelq.commands.labelsets import set_name
from labelq.commands.options import (
    REDIS_URL_OPTION,
    SHORTLIST_OPTION,
    broker,
    cli_settings,
    local_engine,
)


@click.command("eval")
@click.argument("data", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--labels-file", type=click.Path(exists=True, path_type=Path), help="JSON list of labels")
@click.option(
    "--label-set",
    "label_set",
    default=None,
    callback=set_name,
    help="Evaluate a stored label set as workers serve it (its head, if it has one) instead of --labels-file",
)
@REDIS_URL_OPTION
@click.option("--descriptions", type=click.Path(exists=True, path_type=Path), help="JSON map label -> description")
@click.option("--template", default=None, help="Hypothesis template containing {}")
@click.option("--model", default=None, help="Model name or directory")
@SHORTLIST_OPTION
@click.option(
    "--examples-from",
    type=click.Path(exists=True, path_type=Path),
    help="Labelled JSONL to draw few-shot examples from (never the test file)",
)
@click.option("--shots", default=0, show_default=True, help="Examples per label drawn from --examples-from")
@click.option("--draws", default=1, show_default=True, help="Repeat with this many random draws (mean and spread)")
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--fit-thresholds",
    "fit_to",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Fit per-label thresholds on DATA (use a held-apart split) and save them as JSON",
)
@click.option("--limit", default=0, help="Use only the first N examples (0: all)")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON")
def eval_command(
    data: Path,
    labels_file: Path | None,
    label_set: str | None,
    redis_url: str,
    descriptions: Path | None,
    template: str | None,
    model: str | None,
    shortlist: int | None,
    examples_from: Path | None,
    shots: int,
    draws: int,
    seed: int,
    fit_to: Path | None,
    limit: int,
    as_json: bool,
) -> None:
    """Accuracy, macro-F1 and the most confused pairs of a model on labelled DATA (JSON lines: text, label)."""
    from worker.errors import InputError
    from worker.ops import evaluation as ev
    from worker.stream.labelsets import LabelSetStore

    examples = ev.read_examples(data)[: limit or None]
    if (labels_file is None) == (label_set is None):
        raise click.UsageError("give --labels-file or --label-set (one of them)")
    stored = LabelSetStore(broker(redis_url), cli_settings().limits()).get(label_set) if label_set else None
    if label_set and stored is None:
        raise InputError(f"no label set {label_set} in {redis_url} (labelq labelsets list)")
    if stored and (shots or descriptions or template):
        raise click.UsageError("--label-set is evaluated as stored: no --descriptions, --template or --shots")
    names = [label.name for label in stored.labels] if stored else ev.read_label_names(labels_file)  # type: ignore[arg-type]
    unknown = {ex.label for ex in examples} - set(names)
    if unknown:
        raise click.BadParameter(f"labels in the data but not in the labels file or label set: {sorted(unknown)}")
    described = json.loads(descriptions.read_text()) if descriptions else {}
    pool = ev.read_examples(examples_from) if examples_from else []
    if shots and not pool:
        raise click.BadParameter("--shots needs --examples-from")
    engine = local_engine(model)
    reports = []
    for draw in range(draws):
        labels = ev.build_labels(names, described, ev.draw_shots(pool, names, shots, seed + draw))
        with click.progressbar(length=len(examples), label=f"draw {draw + 1}/{draws}", file=sys.stderr) as bar:
            reports.append(
                ev.evaluate(
                    engine,
                    examples,
                    labels,
                    template=template,
                    shortlist=shortlist,
                    progress=bar.update,
                    labelset=stored,
                )
            )
    report = reports[0]
    summary = ev.report_dict(report)
    if draws > 1:
        summary["draws"] = ev.draws_dict(reports)
    if fit_to:
        fitted = ev.fit_thresholds(report, [ex.label for ex in examples], names)
        fit_to.write_text(json.dumps(fitted, indent=2) + "\n")
        summary["thresholds_saved_to"] = str(fit_to)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(f"examples: {report.n}  labels: {len(names)}  model: {engine.classifier(model).card.name}")
    if draws > 1:
        d = summary["draws"]
        click.echo(
            f"accuracy: {d['accuracy_mean']:.4f}  macro-F1: {d['macro_f1_mean']:.4f} "
            f"± {d['macro_f1_stdev']:.4f} over {draws} draws of {shots} examples per label"
        )
    else:
        click.echo(f"accuracy: {report.accuracy:.4f}  macro-F1: {report.macro_f1:.4f} ({summary['macro_f1_over']})")
    if stored is not None:
        scored = ", ".join(f"{scorer} {count}" for scorer, count in sorted(report.scored_by.items()))
        click.echo(f"label set {stored.name} version {stored.version}, scored by: {scored}")
        if report.scorer_note:
            click.echo(f"note: {report.scorer_note}")
    if report.shortlist_recall is not None:
        click.echo(f"gold label kept by the shortlist: {report.shortlist_recall:.4f}")
    click.echo("most confused (gold -> predicted: count):")
    for gold, predicted, count in report.confused[:10]:
        click.echo(f"  {gold} -> {predicted}: {count}")
    if fit_to:
        click.echo(f"per-label thresholds saved to {fit_to}")
