"""`labelq labelsets`: named, versioned label sets in Redis (worker/stream/labelsets.py)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import click

from labelq.commands.options import (
    FLEET_URL_OPTION,
    broker,
    cli_settings,
    fleet_urls,
    local_engine,
)


@click.group()
def labelsets() -> None:
    """Named, versioned label sets in Redis: requests name one (`label_set`) instead of listing labels."""


def set_name(ctx: click.Context | None, param: click.Parameter | None, value: str | None) -> str | None:
    """A label set name as requests may name one (`label_set`): letters, digits, `_ . -`, at most 100."""
    from schemas.request import LABEL_SET_NAME_PATTERN

    if value is not None and not re.fullmatch(LABEL_SET_NAME_PATTERN, value):
        raise click.BadParameter(f"{value!r}: a label set name is letters, digits, '_', '.', '-' (at most 100)")
    return value


def _limits() -> Any:
    """What a label set is held to here: the limits the workers' settings give a request (LABELQ_MAX_LABELS, ...),
    so a set the command stores is one the workers, configured alike, serve."""
    return cli_settings().limits()


def _store(redis_url: str | None) -> Any:
    """The label sets of every server of the fleet (LABELQ_REDIS_SHARDS; a request is served by its id's home
    server, so a set must be on each), or of `--redis-url` alone (labelq/commands/labelset_fleet.py)."""
    from labelq.commands.labelset_fleet import fleet_of

    return fleet_of(fleet_urls(redis_url), _limits(), broker)


def _written(store: Any, name: str) -> None:
    """After a write: servers that could not be reached are named, exit 1 (partial); versions that differ between
    servers are said."""
    if len(set(store.versions.values())) > 1:
        each = ", ".join(f"{version} on {server}" for server, version in store.versions.items())
        click.echo(f"note: {name}'s version numbers differ between servers ({each}): each counts its own", err=True)
    if store.missed:
        for server in store.missed:
            click.echo(
                f"error: Redis at {server} unreachable: not written there; run the same command again once it is "
                "back (requests whose home it is do not see this change until then)",
                err=True,
            )
        sys.exit(1)


@labelsets.command("put")
@click.argument("name", callback=set_name)
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--thresholds-from",
    "thresholds_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Per-label thresholds as JSON (what `labelq eval --fit-thresholds` writes); they override",
)
@FLEET_URL_OPTION
def labelsets_put(name: str, source: Path, thresholds_file: Path | None, redis_url: str | None) -> None:
    """Store FILE.yaml as the next version of label set NAME; workers use it from their next batch."""
    from worker.errors import InputError

    thresholds = json.loads(thresholds_file.read_text()) if thresholds_file else None
    labelset = _read_labelset(name, source, thresholds)
    store = _store(redis_url)
    try:
        previous = store.get(name)
    except InputError:  # an unusable latest version: replacing it is the remedy
        previous = None
    version = store.put(labelset)
    click.echo(f"{name} version {version}: {len(labelset.labels)} labels")
    if previous is not None and previous.builtin:
        click.echo(f"note: {name} now overrides the built-in set of that name (delete it to serve the built-in again)")
    if previous is not None and previous.head is not None and labelset.head is None:
        click.echo(
            f"note: {'the built-in set' if previous.builtin else f'version {previous.version}'} had a learned head; "
            f"version {version} has none and scores zero-shot "
            f"(teach it again: labelq labelsets fit {name} --data ...)",
            err=True,
        )
    _written(store, name)


def _embedding_classifier(model: str | None) -> Any:
    """The embedding model a head is fitted on (`fit`, `refit`): `--model`, else the worker's; a `ModelError`
    (exit 4) for a model that is not installed, an `InputError` for one that is not an embedding model."""
    from worker.engine.embedding import EmbeddingClassifier
    from worker.errors import InputError

    classifier = local_engine(model).classifier(model)
    if not isinstance(classifier, EmbeddingClassifier):
        raise InputError(
            f"a head is fitted on an embedding model's vectors; {classifier.card.name} is {classifier.card.kind} "
            "(--model minilm-l6-int8, or set LABELQ_MODEL)"
        )
    return classifier


def _read_labelset(name: str, source: Path, thresholds: dict[str, float] | None = None) -> Any:
    """A label set from a YAML file; any problem is one `InputError` naming the file and the line or field."""
    from pydantic import ValidationError

    from worker.errors import InputError
    from worker.stream.labelsets import LabelSet, first_problem

    try:
        return LabelSet.from_yaml(name, source.read_text(), thresholds, _limits())
    except ValidationError as exc:
        problem = first_problem(exc, whole="the file")
        shape = (
            "" if exc.errors()[0]["type"] == "too_many_labels" else " (a label set is a mapping with a `labels` list)"
        )
        raise InputError(f"{source}: {problem}{shape}") from None
    except ValueError as exc:
        raise InputError(f"{source}: {exc}") from None


def _labelset_from_data(name: str, rows: list[Any], data: Path) -> Any:
    """A new set named by the data's own labels, in order of first appearance; one `InputError` if it cannot be."""
    from pydantic import ValidationError

    from worker.errors import InputError
    from worker.stream.labelsets import LabelSet, first_problem

    names = list(dict.fromkeys(label for row in rows for label in row.labels))
    if not names:
        raise InputError(f"{data}: no row names a label; a new label set needs at least one")
    try:
        return LabelSet.model_validate({"name": name, "labels": names}, context=_limits())
    except ValidationError as exc:
        raise InputError(f"{data}: its labels cannot make label set {name!r}: {first_problem(exc)}") from None


@labelsets.command("fit")
@click.argument("name", callback=set_name)
@click.option(
    "--data",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help='Labelled JSON lines: {"text": ..., "label": "name"} (or "label": [names] for a multi-label set)',
)
@click.option(
    "--val",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Validation rows (same format) for choices and thresholds; default: held apart from --data",
)
@click.option(
    "--labels-from",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A label set YAML to start from (descriptions help); default: the stored set NAME, else the data's labels",
)
@click.option("--model", default=None, help="The embedding model (default: the worker's, LABELQ_MODEL)")
@click.option("--seed", default=0, show_default=True, help="For holding rows apart")
@click.option(
    "--keep-labels-without-rows",
    "keep_unseen",
    is_flag=True,
    help="Store the set's labels that have no rows in --data with threshold 1.0: accepted only at a score of 1.0 "
    "(default: refuse)",
)
@FLEET_URL_OPTION
def labelsets_fit(
    name: str,
    data: Path,
    val: Path | None,
    labels_from: Path | None,
    model: str | None,
    seed: int,
    keep_unseen: bool,
    redis_url: str | None,
) -> None:
    """Teach label set NAME from labelled examples: fit a head on the embedding model's vectors and store it as
    NAME's next version (needs the `fit` extra: pip install 'labelq[fit]'). Every label of the set needs rows in
    --data, unless --keep-labels-without-rows."""
    from worker.errors import InputError
    from worker.ops import training
    from worker.stream.labelsets import LabelSet

    training.require_fitting()
    rows, multi_label = training.read_rows(data)
    val_rows, val_multi = training.read_rows(val) if val else ([], multi_label)
    if val_multi != multi_label:
        raise InputError(f"{val}: its labels are {'lists' if val_multi else 'names'}, unlike {data}'s")
    store = _store(redis_url)
    if labels_from:
        base = _read_labelset(name, labels_from)
    else:
        base = store.get(name) or _labelset_from_data(name, rows, data)
    if base.multi_label is not None and base.multi_label != multi_label:
        mode = "multi-label" if base.multi_label else "single-label"
        raise InputError(f"label set {name} is {mode}; {data} is {'multi' if multi_label else 'single'}-label data")
    training.check_data_labels([label.name for label in base.labels], [*rows, *val_rows])  # before any embedding
    with_rows = {label for row in rows for label in row.labels}
    unseen = [label.name for label in base.labels if label.name not in with_rows]
    if unseen and not keep_unseen:
        raise InputError(
            f"{data}: no rows of {_some(unseen)} (label set {name}): no threshold can be fitted for a label without "
            "rows; add rows of them, fit a set without them (--labels-from), or --keep-labels-without-rows to store "
            "them with threshold 1.0 (accepted only at a score of 1.0)"
        )
    classifier = _embedding_classifier(model)
    texts = len({row.text for row in [*rows, *val_rows]})
    with click.progressbar(length=texts, label=f"embedding {texts} texts", file=sys.stderr) as bar:
        fitted = training.fit_head(
            classifier,
            base.labels,
            rows,
            multi_label=multi_label,
            template=base.hypothesis_template,
            val_rows=val_rows,
            seed=seed,
            data_sha256=training.file_digest(data),
            progress=bar.update,
        )
    # each label's fitted threshold; a label without validating rows keeps its own (none: the requests' default);
    # a label without rows at all is never accepted
    thresholds = {**fitted.thresholds, **dict.fromkeys(unseen, NEVER_ACCEPTED)}
    labels = tuple(
        label.model_copy(update={"threshold": thresholds.get(label.name, label.threshold)}) for label in base.labels
    )
    # taught from the built-in set's labels (when none is stored): a stored set of one's own, its provenance not
    # the built-in's
    update = {"labels": labels, "multi_label": multi_label, "head": fitted.head}
    if base.builtin:
        update |= {"builtin": False, "provenance": None}
    taught = base.model_copy(update=update)
    version = store.put(LabelSet.model_validate(taught.model_dump(), context=store.limits))
    metrics, how = fitted.metrics, fitted.head.fitted["method"]
    card = classifier.card
    click.echo(f"{name} version {version}: {how} head on {card.name}@{card.revision} from {len(rows)} rows")
    accuracy = f", accuracy {metrics['accuracy']:.4f}" if "accuracy" in metrics else ""
    click.echo(
        f"validation ({metrics['validation']}, {metrics['validation_rows']} rows): macro-F1 {metrics['macro_f1']:.4f}"
        f"{accuracy}; zero-shot with the set's label texts: {metrics['zero_shot_macro_f1']:.4f}"
    )
    if unseen:
        click.echo(
            f"note: {_some(unseen)} had no rows: stored with threshold 1.0 (accepted only at a score of 1.0)", err=True
        )
    unfitted = [n for n in (label.name for label in base.labels) if n not in thresholds]
    if unfitted:
        click.echo(
            f"note: no validation rows of {_some(unfitted)}: their thresholds were not fitted (each keeps its own, "
            "else the requests' default)",
            err=True,
        )
    _written(store, name)


# `fit --keep-labels-without-rows`: a label no row taught gets the highest threshold there is, accepted only at a
# score of exactly 1.0 (a head's float64 sigmoid or softmax reaches it only past a logit margin of about 37)
NEVER_ACCEPTED = 1.0


def _some(names: list[str], shown: int = 5) -> str:
    """Label names for one line: the first few, and how many more."""
    listed = ", ".join(names[:shown])
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return f"{len(names)} label{'s' if len(names) != 1 else ''} ({listed}{more})"


@labelsets.command("refit")
@click.argument("name", callback=set_name)
@click.option(
    "--data",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The set's own training rows, fitted on with the corrections (when you have them)",
)
@click.option(
    "--val",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Validation rows: the candidate must also score at least as well as the live version on them",
)
@click.option("--model", default=None, help="The embedding model (default: the worker's, LABELQ_MODEL)")
@FLEET_URL_OPTION
def labelsets_refit(name: str, data: Path | None, val: Path | None, model: str | None, redis_url: str | None) -> None:
    """Fold the moderators' corrections of NAME (labelq feedback) into a candidate head; it becomes NAME's next
    version only if it scores at least as well as the live one on held-out corrections (and --val). Exit 0
    promoted, 1 kept as a candidate (the line says why)."""
    from worker.ops import training
    from worker.ops.refit import refit
    from worker.settings import load_settings

    training.require_fitting()
    extra = training.read_rows(data)[0] if data else []
    val_rows = training.read_rows(val)[0] if val else []
    store = _store(redis_url)
    corrections = store.corrections(load_settings().corrections_max)  # every server's: each keeps its requests'
    classifier = _embedding_classifier(model)
    outcome = refit(store, corrections, classifier, name, extra, val_rows)
    if outcome.promoted:
        click.echo(f"{name} version {outcome.version} promoted: {outcome.summary}")
        _written(store, name)
        return
    click.echo(
        f"{name}: kept as a candidate, not promoted (it scored below the live version): {outcome.summary}", err=True
    )
    _written(store, name)
    sys.exit(1)


@labelsets.command("promote")
@click.argument("name", callback=set_name)
@FLEET_URL_OPTION
def labelsets_promote(name: str, redis_url: str | None) -> None:
    """Make NAME's candidate (a refit that was not promoted) its next version, as it is."""
    store = _store(redis_url)
    candidate = store.candidate(name)
    if candidate is None:
        click.echo(f"label set {name} has no candidate (labelq labelsets refit {name} keeps one)", err=True)
        sys.exit(1)
    version = store.put(candidate)
    store.drop_candidate(name)
    store.shadow_off(name)  # it is live now
    click.echo(f"{name} version {version}: the candidate, promoted")
    _written(store, name)


@labelsets.command("shadow")
@click.argument("name", callback=set_name)
@click.option("--off", is_flag=True, help="Stop scoring the candidate in shadow")
@FLEET_URL_OPTION
def labelsets_shadow(name: str, off: bool, redis_url: str | None) -> None:
    """Score NAME's candidate (a refit that was not promoted) in shadow beside the live version on live traffic:
    never published; its agreement, and which was right where moderators correct, are metrics."""
    store = _store(redis_url)
    if off:
        click.echo(f"{name}: shadow off" if store.shadow_off(name) else f"{name}: no candidate was in shadow")
        _written(store, name)
        return
    candidate = store.shadow_on(name)
    if candidate is None:
        click.echo(f"label set {name} has no candidate (labelq labelsets refit {name} keeps one)", err=True)
        sys.exit(1)
    click.echo(
        f"{name}: its candidate runs in shadow from the workers' next claim (labelq_labelset_shadow_total, "
        "labelq_labelset_corrected_total); promote or --off when you have seen enough"
    )
    _written(store, name)


@labelsets.command("rollback")
@click.argument("name", callback=set_name)
@click.option(
    "--to", "to_version", type=click.IntRange(min=0), default=None, help="The version to serve again (0: the built-in)"
)
@FLEET_URL_OPTION
def labelsets_rollback(name: str, to_version: int | None, redis_url: str | None) -> None:
    """Serve an earlier version of NAME again (default: the one before the latest; 0: the built-in set of that
    name), stored as the next version (versions only grow: what was served, and when, stays readable)."""
    store = _store(redis_url)
    latest = store.get(name)
    if latest is None or latest.builtin:
        click.echo(f"label set {name} has no stored versions to roll back", err=True)
        sys.exit(1)
    target = latest.version - 1 if to_version is None else to_version
    earlier = store.get(name, target) if target >= 0 else None  # 0: the built-in set of that name
    if earlier is None:
        which = "built-in version (0)" if target == 0 else f"version {target}"
        click.echo(f"label set {name} has no {which} (latest {latest.version})", err=True)
        sys.exit(1)
    version = store.put(earlier)
    click.echo(f"{name} version {version}: version {target} again (was version {latest.version})")
    _written(store, name)


@labelsets.command("get")
@click.argument("name", callback=set_name)
@click.option("--version", type=int, default=None, help="A past version (default: the latest)")
@FLEET_URL_OPTION
def labelsets_get(name: str, version: int | None, redis_url: str | None) -> None:
    """Print a label set as YAML."""
    import yaml

    labelset = _store(redis_url).get(name, version)
    if labelset is None:
        click.echo(f"no label set {name}" + (f" version {version}" if version else ""), err=True)
        sys.exit(1)
    shown = labelset.model_dump(mode="json", exclude_none=True, exclude={"head": {"weights", "bias"}})
    if "head" in shown:  # its numbers are not for reading (`--json` keeps them)
        shown["head"]["weights"] = f"<{len(labelset.head.labels)} x {labelset.head.dim} float32>"
    click.echo(yaml.safe_dump(shown, sort_keys=False), nl=False)


@labelsets.command("list")
@FLEET_URL_OPTION
def labelsets_list(redis_url: str | None) -> None:
    """Every label set with its latest version and label count. A stored set that cannot be read is named on
    stderr and skipped; the listing then exits 1 (partial)."""
    from worker.errors import InputError
    from worker.stream.labelsets import builtin_labelsets

    store = _store(redis_url)
    builtins = builtin_labelsets()
    skipped = 0
    for name in store.names():
        try:
            each = store.latest_each(name)  # one read a server
        except InputError as exc:  # one broken set does not hide the others
            click.echo(f"skipped {name}: {exc}", err=True)
            skipped += 1
            continue
        labelset = next((found for found in each.values() if found is not None), None)
        if labelset is None:
            continue
        head = f"  head on {labelset.head.model}@{labelset.head.model_revision}" if labelset.head else ""
        where = "  built-in" if labelset.builtin else ("  (overrides the built-in)" if name in builtins else "")
        versions = {server: (s.version if s is not None and not s.builtin else None) for server, s in each.items()}
        if len(set(versions.values())) > 1:  # a server missed a write, or was written to alone
            shown = ", ".join(f"v{v if v is not None else ' none'} on {server}" for server, v in versions.items())
            where += f"  (differs between servers: {shown})"
            skipped += 1
        click.echo(f"{name}  v{labelset.version}  {len(labelset.labels)} labels{head}{where}")
    for server in store.missed:
        click.echo(f"error: Redis at {server} unreachable: its label sets are not listed", err=True)
    if skipped or store.missed:
        sys.exit(1)


@labelsets.command("delete")
@click.argument("name", callback=set_name)
@FLEET_URL_OPTION
def labelsets_delete(name: str, redis_url: str | None) -> None:
    """Delete a stored label set and all its versions (a built-in set of that name is then served again)."""
    from worker.stream.labelsets import builtin_labelsets

    builtin = name in builtin_labelsets()
    store = _store(redis_url)
    if not store.delete(name):
        if builtin:
            click.echo(f"{name} is built in: it cannot be deleted (a stored set of that name overrides it)", err=True)
        else:
            click.echo(f"no label set {name}", err=True)
        sys.exit(1)
    click.echo(f"deleted {name}" + ("; the built-in set of that name is served again" if builtin else ""))
    _written(store, name)
