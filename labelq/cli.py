"""The `labelq` command: one function per subcommand, no logic of its own (it calls worker/ and producer/)."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

import click

from schemas import ClassificationResult, ErrorResult, RequestLimits, parse_request


def _settings(**overrides: Any) -> Any:
    from worker.settings import load_settings

    return load_settings(**{k: v for k, v in overrides.items() if v is not None})


def _engine(model: str | None, **overrides: Any) -> Any:
    from worker.engine.engine import Engine

    return Engine(_settings(model=model, **overrides), allow_paths=True)


def _print_result(outcome: ClassificationResult | ErrorResult, as_json: bool) -> None:
    if as_json:
        click.echo(outcome.model_dump_json(indent=2))
    elif isinstance(outcome, ErrorResult):
        where = f" ({outcome.field})" if outcome.field else ""
        click.echo(f"error {outcome.code.value}{where}: {outcome.message}", err=True)
    else:
        width = max(len(item.label) for item in outcome.labels)
        for item in outcome.labels:
            mark = "*" if item.accepted else " "
            click.echo(f"{mark} {item.label:<{width}}  {item.score:.4f}")
        click.echo(
            f"top: {outcome.top}   model: {outcome.model}@{outcome.model_revision}"
            f"{'   (text truncated)' if outcome.truncated else ''}"
        )


SHORTLIST_OPTION = click.option(
    "--shortlist", type=click.IntRange(min=0), default=None, help="NLI models: score only the top K labels (embedding)"
)


@click.group()
@click.version_option(package_name="labelq")
def main() -> None:
    """labelq: zero-shot text classification as a streaming service on message queues."""


@main.command()
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
    message = _request_from_flags(text, labels, multi_label, template, thresholds=threshold, shortlist=shortlist)
    outcome = _classify_one(json.dumps(message), model)
    _print_result(outcome, as_json)
    sys.exit(1 if isinstance(outcome, ErrorResult) else 0)


@main.command("webhook-worker")
@click.option("--loglevel", default="INFO", show_default=True)
@click.option("--hostname", default="labelq-webhooks@%h", show_default=True, help="Celery node name")
def webhook_worker_command(loglevel: str, hostname: str) -> None:
    """Run a webhook delivery worker: signed POSTs, retries with backoff, dead letters (no model)."""
    from worker import launcher

    launcher.run_in_process(_settings(), loglevel=loglevel, hostname=hostname, role="webhooks")


def _request_from_flags(
    text: str, labels: str, multi_label: bool, template: str | None, **optional: object
) -> dict[str, Any]:
    """A wire message from CLI flags (comma-separated labels); optional fields only when given."""
    message: dict[str, Any] = {
        "text": text,
        "labels": [label.strip() for label in labels.split(",")],
        "multi_label": multi_label,
        "hypothesis_template": template,
        **optional,
    }
    return {key: value for key, value in message.items() if value is not None}


def _classify_one(raw: str, model: str | None) -> ClassificationResult | ErrorResult:
    engine = _engine(model)
    parsed = parse_request(raw, engine.settings.limits())
    if isinstance(parsed, ErrorResult):
        return parsed
    return engine.classify([parsed])[0]  # type: ignore[no-any-return]


@main.command("classify-file")
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "target", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--model", default=None, help="Model name or directory")
@click.option("--batch-size", default=32, show_default=True, help="Requests per engine call")
def classify_file(source: Path, target: Path, model: str | None, batch_size: int) -> None:
    """Classify every request in SOURCE (JSON lines, the wire format) into OUT (one result per line)."""
    engine = _engine(model)
    limits: RequestLimits = engine.settings.limits()
    lines = source.read_bytes().splitlines()
    counts = {"ok": 0, "error": 0}
    with target.open("w", encoding="utf-8") as out, click.progressbar(length=len(lines), label="classifying") as bar:
        for start in range(0, len(lines), batch_size):
            chunk = [line for line in lines[start : start + batch_size] if line.strip()]
            parsed = [parse_request(line, limits) for line in chunk]
            valid = [p for p in parsed if not isinstance(p, ErrorResult)]
            classified = iter(engine.classify(valid))
            for item in parsed:
                outcome = item if isinstance(item, ErrorResult) else next(classified)
                counts[outcome.status] += 1
                out.write(outcome.model_dump_json() + "\n")
            bar.update(len(lines[start : start + batch_size]))
    click.echo(f"{counts['ok']} classified, {counts['error']} errors -> {target}")


@main.command("eval")
@click.argument("data", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--labels-file", required=True, type=click.Path(exists=True, path_type=Path), help="JSON list of labels")
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
    labels_file: Path,
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
    from worker.ops import evaluation as ev

    examples = ev.read_examples(data)[: limit or None]
    names = ev.read_label_names(labels_file)
    unknown = {ex.label for ex in examples} - set(names)
    if unknown:
        raise click.BadParameter(f"labels in the data but not in the labels file: {sorted(unknown)}")
    described = json.loads(descriptions.read_text()) if descriptions else {}
    pool = ev.read_examples(examples_from) if examples_from else []
    if shots and not pool:
        raise click.BadParameter("--shots needs --examples-from")
    engine = _engine(model)
    reports = []
    for draw in range(draws):
        labels = ev.build_labels(names, described, ev.draw_shots(pool, names, shots, seed + draw))
        with click.progressbar(length=len(examples), label=f"draw {draw + 1}/{draws}", file=sys.stderr) as bar:
            reports.append(
                ev.evaluate(engine, examples, labels, template=template, shortlist=shortlist, progress=bar.update)
            )
    report = reports[0]
    summary = ev.report_dict(report)
    if draws > 1:
        summary["draws"] = {
            "accuracy": [round(r.accuracy, 4) for r in reports],
            "macro_f1": [round(r.macro_f1, 4) for r in reports],
            "macro_f1_mean": round(statistics.mean(r.macro_f1 for r in reports), 4),
            "macro_f1_stdev": round(statistics.stdev(r.macro_f1 for r in reports), 4),
            "accuracy_mean": round(statistics.mean(r.accuracy for r in reports), 4),
        }
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
        click.echo(f"accuracy: {report.accuracy:.4f}  macro-F1: {report.macro_f1:.4f}")
    if report.shortlist_recall is not None:
        click.echo(f"gold label kept by the shortlist: {report.shortlist_recall:.4f}")
    click.echo("most confused (gold -> predicted: count):")
    for gold, predicted, count in report.confused[:10]:
        click.echo(f"  {gold} -> {predicted}: {count}")
    if fit_to:
        click.echo(f"per-label thresholds saved to {fit_to}")


REDIS_URL_OPTION = click.option(
    "--redis-url",
    envvar="LABELQ_REDIS_URL",
    default="redis://127.0.0.1:6379/0",
    show_default=True,
    help="Broker and results Redis (env LABELQ_REDIS_URL)",
)


@main.command("worker")
@click.option("--processes", type=int, default=None, help="Worker processes (default LABELQ_WORKER_PROCESSES, 1)")
@click.option("--loglevel", default="INFO", show_default=True)
@click.option("--hostname", default="labelq@%h", show_default=True, help="Celery node name")
def worker_command(processes: int | None, loglevel: str, hostname: str) -> None:
    """Run a streaming worker: consume the request queues in mini-batches, publish every result."""
    from worker import launcher
    from worker.engine.onnx import run_defaults
    from worker.errors import ConfigError
    from worker.runtime import policies

    settings = _settings(worker_processes=processes)
    try:
        policies(settings, run_defaults(settings))  # the batch limits fit the visibility timeout on this device
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    if settings.worker_processes == 1:
        launcher.run_in_process(settings, loglevel=loglevel, hostname=hostname)
    else:
        sys.exit(launcher.run_processes(settings, loglevel=loglevel, hostname=hostname))


@main.command()
@click.argument("text")
@click.option("--labels", required=True, help="Comma-separated candidate labels")
@click.option("--multi-label", is_flag=True)
@click.option("--template", default=None, help="Hypothesis template containing {}")
@click.option("--reply-to", default=None, help="Result queue (a Redis list) to push the result onto")
@click.option("--queue", type=click.Choice(["realtime", "bulk"]), default="realtime", show_default=True)
@click.option("--wait", is_flag=True, help="Wait for the result and print it")
@click.option("--timeout", "timeout_s", default=30.0, show_default=True, help="Seconds to wait with --wait")
@REDIS_URL_OPTION
def submit(
    text: str,
    labels: str,
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

    from producer import Client
    from schemas import error_from_validation

    with Client(redis_url) as client:
        try:
            request_id = client.submit(
                _request_from_flags(text, labels, multi_label, template, reply_to=reply_to), queue=queue
            )
        except ValidationError as exc:
            _print_result(error_from_validation(exc, None), as_json=True)
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


@main.command("submit-file")
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--queue", type=click.Choice(["realtime", "bulk"]), default="bulk", show_default=True)
@click.option("--reply-to", default=None, help="Result queue for lines that name none")
@REDIS_URL_OPTION
def submit_file(source: Path, queue: str, reply_to: str | None, redis_url: str) -> None:
    """Send every request in SOURCE (JSON lines, the wire format); invalid lines are reported, not sent."""
    from producer import Client

    lines = [line for line in source.read_bytes().splitlines() if line.strip()]
    sent, rejected = 0, []
    with Client(redis_url) as client, click.progressbar(lines, label="submitting", file=sys.stderr) as bar:
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


@main.command()
@click.argument("reply_queue")
@click.option("--follow", is_flag=True, help="Keep waiting for new results")
@REDIS_URL_OPTION
def results(reply_queue: str, follow: bool, redis_url: str) -> None:
    """Print (and take off) the results on a result queue, one JSON line each."""
    from producer import Client

    with Client(redis_url) as client:
        for result in client.results(reply_queue, follow=follow):
            click.echo(result.model_dump_json())


@main.command()
@click.option("--node", default=None, help="Only this node (e.g. labelq@host); exit 1 unless it is ready")
@REDIS_URL_OPTION
def workers(node: str | None, redis_url: str) -> None:
    """List ready workers (model loaded, consuming); exit 1 when none (or not NODE) is ready."""
    from producer import Client

    with Client(redis_url) as client:
        ready = client.workers()
    if node is not None:
        ready = {name: info for name, info in ready.items() if name == node}
    for name, info in sorted(ready.items()):
        click.echo(f"{name}  {info['model']}@{info['revision']}  pid {info['pid']}  {', '.join(info['queues'])}")
    if not ready:
        click.echo("no ready worker" + (f" named {node}" if node else ""), err=True)
        sys.exit(1)


@main.command()
@click.option("--json", "as_json", is_flag=True)
@REDIS_URL_OPTION
def health(as_json: bool, redis_url: str) -> None:
    """Redis reachable, workers ready (model, revision) and answering a ping, queue depths.
    Exit 0 healthy, 1 no ready worker, 2 Redis unreachable."""
    from labelq.health import check

    report = check(redis_url)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        sys.exit(report.status)
    click.echo(f"redis: {report.redis}")
    for name, info in sorted(report.workers.items()):
        answered = "answers ping" if name in report.pinged else "no ping reply"
        click.echo(f"worker {name}: {info['model']}@{info['revision']}, pid {info['pid']}, {answered}")
    others = [name for name in report.pinged if name not in report.workers]
    if others:
        click.echo(f"other Celery nodes answering: {', '.join(others)}")
    if report.depths:
        click.echo("queues: " + ", ".join(f"{k} {v}" for k, v in report.depths.items()))
    click.echo(report.to_dict()["status"])
    sys.exit(report.status)


@main.command()
@click.option("--count", default=24, show_default=True, help="Requests to send")
@click.option("--timeout", "timeout_s", default=180.0, show_default=True)
def demo(count: int, timeout_s: float) -> None:
    """End to end on a fresh machine: a Redis (REDIS_URL, else a private one), a worker, a mix of moderation and
    routing requests, results printed as they arrive, then everything shut down."""
    from labelq.demo import run_demo

    sys.exit(run_demo(count=count, timeout_s=timeout_s))


@main.group()
def labelsets() -> None:
    """Named, versioned label sets in Redis: requests name one (`label_set`) instead of listing labels."""


def _labelset_store(redis_url: str) -> Any:
    import redis as redis_lib

    from worker.stream.labelsets import LabelSetStore

    return LabelSetStore(redis_lib.Redis.from_url(redis_url))


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

    from worker.stream.labelsets import LabelSet

    thresholds = json.loads(thresholds_file.read_text()) if thresholds_file else None
    try:
        labelset = LabelSet.from_yaml(name, source.read_text(), thresholds)
    except (ValidationError, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint="FILE") from None
    version = _labelset_store(redis_url).put(labelset)
    click.echo(f"{name} version {version}: {len(labelset.labels)} labels")


@labelsets.command("get")
@click.argument("name")
@click.option("--version", type=int, default=None, help="A past version (default: the latest)")
@REDIS_URL_OPTION
def labelsets_get(name: str, version: int | None, redis_url: str) -> None:
    """Print a label set as YAML."""
    import yaml

    labelset = _labelset_store(redis_url).get(name, version)
    if labelset is None:
        click.echo(f"no label set {name}" + (f" version {version}" if version else ""), err=True)
        sys.exit(1)
    click.echo(yaml.safe_dump(labelset.model_dump(mode="json", exclude_none=True), sort_keys=False), nl=False)


@labelsets.command("list")
@REDIS_URL_OPTION
def labelsets_list(redis_url: str) -> None:
    """Every label set with its latest version and label count."""
    store = _labelset_store(redis_url)
    for name in store.names():
        labelset = store.get(name)
        if labelset is not None:
            click.echo(f"{name}  v{labelset.version}  {len(labelset.labels)} labels")


@labelsets.command("delete")
@click.argument("name")
@REDIS_URL_OPTION
def labelsets_delete(name: str, redis_url: str) -> None:
    """Delete a label set and all its versions."""
    if not _labelset_store(redis_url).delete(name):
        click.echo(f"no label set {name}", err=True)
        sys.exit(1)
    click.echo(f"deleted {name}")


@main.group()
def dlq() -> None:
    """The dead-letter list: what labelq gave up on, with the reason and the raw content."""


@dlq.command("list")
@click.option("--reason", default=None, help="Only dead letters of this reason")
@click.option("--limit", default=20, show_default=True, help="Rows to print (newest last); counts cover all")
@REDIS_URL_OPTION
def dlq_list(reason: str | None, limit: int, redis_url: str) -> None:
    """Counts by reason, then the most recent dead letters."""
    from collections import Counter

    import redis as redis_lib

    from worker.ops import dlq as dead

    rows = dead.read(redis_lib.Redis.from_url(redis_url), reason)
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
    import redis as redis_lib

    from worker.ops import dlq as dead

    found = dead.find(redis_lib.Redis.from_url(redis_url), letter_id)
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
    import redis as redis_lib

    from producer import Client
    from worker.ops import dlq as dead

    if bool(letter_id) == replay_all:
        raise click.UsageError("give one LETTER_ID or --all")
    client = redis_lib.Redis.from_url(redis_url)
    if letter_id:
        found = dead.find(client, letter_id)
        if found is None:
            click.echo(f"no dead letter {letter_id}", err=True)
            sys.exit(1)
        chosen = [found]
    else:
        chosen = dead.read(client, reason)
    failures = 0
    with Client(redis_url) as producer:

        def submit(request_json: str, queue: str) -> str:
            return producer.submit(json.loads(request_json), queue=queue)

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
    import redis as redis_lib

    from worker.ops import dlq as dead

    if not yes:
        click.confirm(f"delete {'all' if reason is None else reason} dead letters?", abort=True)
    click.echo(f"purged {dead.purge(redis_lib.Redis.from_url(redis_url), reason)}")


@main.group()
def models() -> None:
    """Install, list, quantise and verify models."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True)
def models_list(as_json: bool) -> None:
    """The models this machine has (the embedded default and those under LABELQ_MODELS_DIR)."""
    from worker.engine.models import ModelRegistry
    from worker.engine.onnx import run_defaults

    settings = _settings()
    registry = ModelRegistry(settings.models_dir, prefer_quantized=run_defaults(settings).prefer_quantized)
    rows = []
    for name in registry.names():
        try:
            card = registry.card(name)
            rows.append(
                {
                    "name": name,
                    "kind": card.kind,
                    "revision": card.revision,
                    "file": str(card.onnx_path),
                    "default": name == settings.model,
                }
            )
        except Exception as exc:  # a broken directory is listed with its problem, not hidden
            rows.append({"name": name, "error": str(exc), "default": name == settings.model})
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

    card = pull(repo, _settings().models_dir, hub_downloader, revision)
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


if __name__ == "__main__":
    main()
