"""Label sets: stored in Redis with versions, named by requests, updated while a worker runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from producer import Client
from schemas import ClassificationResult, ClassifyRequest, ErrorCode, ErrorResult, parse_request
from tests.conftest import WorkerFactory
from worker.stream.labelsets import LabelSet

ROOT = Path(__file__).resolve().parents[3]


def labelq(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LABELQ_REDIS_URL": redis_url}
    return subprocess.run(
        [sys.executable, "-m", "labelq.cli", "labelsets", *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_yaml_labels_thresholds_and_request_overrides() -> None:
    labelset = LabelSet.from_yaml(
        "moderation", (ROOT / "examples" / "moderation.labelset.yaml").read_text(), thresholds={"spam": 0.8}
    )
    assert [label.name for label in labelset.labels] == ["insult", "threat", "spam"]
    assert labelset.labels[1].hypothesis == "This message threatens someone."
    assert [label.threshold for label in labelset.labels] == [0.5, 0.5, 0.8]
    plain = labelset.apply_to(ClassifyRequest(text="x", label_set="moderation"))
    assert plain.multi_label is True and plain.labels == labelset.labels
    overridden = labelset.apply_to(
        ClassifyRequest(text="x", label_set="moderation", multi_label=False, hypothesis_template="About {}.")
    )
    assert overridden.multi_label is False and overridden.hypothesis_template == "About {}."
    with pytest.raises(ValueError, match="not in the set"):
        LabelSet.from_yaml("m", "labels: [a, b]", thresholds={"c": 0.5})
    with pytest.raises(ValueError, match="unique"):
        LabelSet.from_yaml("m", "labels: [a, a]")


def test_a_new_version_is_used_without_restarting_the_worker(
    start_worker: WorkerFactory, client: Client, redis_url: str, tmp_path: Path
) -> None:
    start_worker()
    first = tmp_path / "v1.yaml"
    first.write_text("labels:\n  - name: billing\n  - name: praise\n")
    assert "routing version 1: 2 labels" in labelq(redis_url, "put", "routing", str(first)).stdout
    request = ClassifyRequest(text="I was charged twice for my subscription", label_set="routing")
    result = client.wait(client.submit(request), timeout_s=30)
    assert isinstance(result, ClassificationResult)
    assert {i.label for i in result.labels} == {"billing", "praise"}
    assert (result.label_set, result.label_set_version, result.top) == ("routing", 1, "billing")

    second = tmp_path / "v2.yaml"
    second.write_text(
        "labels:\n  - name: refund\n    description: a refund or a double charge\n"
        "  - name: delivery\n  - name: praise\n"
    )
    thresholds = tmp_path / "t.json"
    thresholds.write_text(json.dumps({"refund": 0.4}))
    assert (
        "version 2: 3 labels"
        in labelq(redis_url, "put", "routing", str(second), "--thresholds-from", str(thresholds)).stdout
    )
    result = client.wait(client.submit(request.model_copy(update={"id": "second"})), timeout_s=30)
    assert isinstance(result, ClassificationResult)
    assert (result.label_set_version, result.top) == (2, "refund")
    assert next(i for i in result.labels if i.label == "refund").threshold == 0.4

    listed = labelq(redis_url, "list")
    assert "routing  v2  3 labels" in listed.stdout
    old = labelq(redis_url, "get", "routing", "--version", "1")
    assert "billing" in old.stdout and "refund" not in old.stdout
    assert labelq(redis_url, "delete", "routing").returncode == 0
    gone = client.wait(client.submit(request.model_copy(update={"id": "third"})), timeout_s=30)
    assert isinstance(gone, ErrorResult) and gone.code == ErrorCode.UNKNOWN_LABEL_SET and gone.field == "label_set"
    assert labelq(redis_url, "get", "routing").returncode == 1


def test_a_bad_label_set_file_is_refused(redis_url: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("labels: []\n")
    done = labelq(redis_url, "put", "empty", str(bad))
    assert done.returncode == 2 and "labels" in done.stderr


@pytest.mark.parametrize("template", ["It is {:>100000}.", "{0}", "no placeholder"])
def test_a_label_sets_template_is_plain_substitution(template: str) -> None:
    with pytest.raises(ValueError, match="template"):
        LabelSet.from_yaml("t", yaml.safe_dump({"labels": ["a", "b"], "hypothesis_template": template}))


def test_a_label_sets_default_reaches_the_worker_unless_the_producer_set_it() -> None:
    moderation = LabelSet.from_yaml("moderation", yaml.safe_dump({"labels": ["threat", "spam"], "multi_label": True}))
    named = ClassifyRequest(text="you will regret this", label_set="moderation")
    assert "multi_label" not in named.to_wire()
    received = parse_request(json.dumps(named.to_wire()))
    assert not isinstance(received, ErrorResult) and moderation.apply_to(received.request).multi_label is True
    chosen = ClassifyRequest(text="x", label_set="moderation", multi_label=False)
    assert chosen.to_wire()["multi_label"] is False
    assert moderation.apply_to(parse_request(json.dumps(chosen.to_wire())).request).multi_label is False  # type: ignore[union-attr]


TEACHING = {
    "complaint": ["this is broken and I am furious", "terrible service, it failed again", "it keeps failing, awful"],
    "thanks": ["thank you so much for fixing it", "great job, thanks a lot", "works perfectly now, cheers"],
}


def test_a_taught_label_set_is_served_by_its_head_and_a_stale_one_falls_back_visibly(
    start_worker: WorkerFactory, client: Client, redis_url: str, tmp_path: Path
) -> None:
    import redis as redis_lib

    from worker.stream.labelsets import LABELSET_KEY

    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": n}) + "\n" for n, ts in TEACHING.items() for t in ts))
    taught = labelq(redis_url, "fit", "feedback", "--data", str(data))
    assert taught.returncode == 0, taught.stderr
    assert "feedback version 1:" in taught.stdout and "head on minilm-l6-int8@" in taught.stdout
    assert "validation (5-fold cross-validation, 6 rows)" in taught.stdout
    assert "head on minilm-l6-int8" in labelq(redis_url, "list").stdout
    shown = yaml.safe_load(labelq(redis_url, "get", "feedback").stdout)
    assert shown["head"]["weights"] == "<2 x 384 float32>" and shown["head"]["fitted"]["rows"] == 6

    worker = start_worker()
    request = ClassifyRequest(text="thanks, you fixed it quickly", label_set="feedback")
    served = client.wait(client.submit(request), timeout_s=30)
    assert isinstance(served, ClassificationResult)
    assert (served.scorer, served.scorer_note, served.label_set_version) == ("head", None, 1)

    # the same set, its head claiming another revision of the model: scored zero-shot, and said so
    store = redis_lib.Redis.from_url(redis_url)
    stored = json.loads(store.get(LABELSET_KEY + "feedback"))  # type: ignore[arg-type]
    stored["set"]["head"]["model_revision"] = "0123stale456"
    store.set(LABELSET_KEY + "feedback", json.dumps(stored))
    stale = client.wait(client.submit(request.model_copy(update={"id": "stale"})), timeout_s=30)
    assert isinstance(stale, ClassificationResult) and stale.scorer == "zero-shot"
    assert stale.scorer_note and "0123stale456" in stale.scorer_note and "refit" in stale.scorer_note

    # a head that does not validate: the set cannot be used, and the request says so
    stored["set"]["head"]["weights"] = stored["set"]["head"]["weights"][:-12]
    store.set(LABELSET_KEY + "feedback", json.dumps(stored))
    broken = client.wait(client.submit(request.model_copy(update={"id": "broken"})), timeout_s=30)
    assert isinstance(broken, ErrorResult) and broken.code == ErrorCode.INVALID_LABEL_SET
    assert "head" in broken.message and worker.poll() is None
    log = (tmp_path / "worker-0.log").read_text()
    assert "0123stale456" in log and "invalid_label_set" in log

    unusable = labelq(redis_url, "get", "feedback")
    assert unusable.returncode == 2 and "cannot be used: head" in unusable.stderr and "Traceback" not in unusable.stderr

    # a new version without a head: `put` says the head is gone
    plain = tmp_path / "plain.yaml"
    plain.write_text("labels: [complaint, thanks]\n")
    put = labelq(redis_url, "put", "feedback", str(plain))
    assert "version 2" in put.stdout and "had a learned head" not in put.stderr  # the latest was unusable
    again = labelq(redis_url, "fit", "feedback", "--data", str(data))
    assert "feedback version 3" in again.stdout
    assert "had a learned head" in labelq(redis_url, "put", "feedback", str(plain)).stderr


def test_eval_of_a_stored_label_set_runs_as_served(redis_url: str, tmp_path: Path) -> None:
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": n}) + "\n" for n, ts in TEACHING.items() for t in ts))
    assert labelq(redis_url, "fit", "feedback", "--data", str(data)).returncode == 0
    env = {**os.environ, "LABELQ_REDIS_URL": redis_url}
    done = subprocess.run(
        [sys.executable, "-m", "labelq.cli", "eval", str(data), "--label-set", "feedback", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["scored_by"] == {"head": 6} and report["n"] == 6
    missing = subprocess.run(
        [sys.executable, "-m", "labelq.cli", "eval", str(data), "--label-set", "nope"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2 and missing.stderr.strip().startswith("error: no label set nope")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "missing.jsonl"], "does not exist"),
        (["--data", "{bad}"], "bad.jsonl:1: not JSON"),
        (["--data", "{good}", "--model", str(ROOT / "tests/fixtures/models/nli-2class")], "embedding model"),
    ],
)
def test_fit_errors_are_one_line(redis_url: str, tmp_path: Path, args: list[str], message: str) -> None:
    bad, good = tmp_path / "bad.jsonl", tmp_path / "good.jsonl"
    bad.write_text("nope\n")
    good.write_text("".join(json.dumps({"text": t, "label": n}) + "\n" for n, ts in TEACHING.items() for t in ts))
    done = labelq(redis_url, "fit", "x", *[a.format(bad=bad, good=good) for a in args])
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


def test_fit_on_a_model_that_is_not_installed_is_a_model_problem(redis_url: str, tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps({"text": t, "label": n}) + "\n" for n, ts in TEACHING.items() for t in ts))
    done = labelq(redis_url, "fit", "x", "--data", str(good), "--model", "no-such-model")
    assert done.returncode == 4 and "not installed" in done.stderr and "--model / LABELQ_MODEL" in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_fit_starts_from_a_label_set_file_and_keeps_its_descriptions(redis_url: str, tmp_path: Path) -> None:
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": n}) + "\n" for n, ts in TEACHING.items() for t in ts))
    labels = tmp_path / "feedback.yaml"
    labels.write_text(
        "labels:\n  - name: complaint\n    description: an angry complaint\n  - name: thanks\n"
        "  - name: question\n    description: a question about how something works\n"
    )
    kept = ("--keep-labels-without-rows",)  # `question` has no rows (tests/worker/ops/test_thresholds_need_rows.py)
    done = labelq(redis_url, "fit", "feedback", "--data", str(data), "--labels-from", str(labels), *kept)
    assert done.returncode == 0, done.stderr
    stored = yaml.safe_load(labelq(redis_url, "get", "feedback").stdout)
    assert [label["name"] for label in stored["labels"]] == ["complaint", "thanks", "question"]
    assert stored["labels"][0]["description"] == "an angry complaint"
    assert stored["head"]["labels"] == ["complaint", "thanks", "question"]  # a label without rows: its text alone
    assert stored["labels"][2]["threshold"] == 1.0
    multi = tmp_path / "multi.jsonl"
    multi.write_text(json.dumps({"text": "x", "label": ["complaint"]}) + "\n")
    refused = labelq(redis_url, "fit", "feedback", "--data", str(multi))
    assert refused.returncode == 2 and "single-label" in refused.stderr


def test_what_an_outside_check_of_teaching_found(redis_url: str, tmp_path: Path) -> None:
    """Each was a traceback (exit 70), a wrong success, or a misleading line before."""
    rows = "".join(json.dumps({"text": t, "label": n}) + "\n" for n, ts in TEACHING.items() for t in ts)
    good = tmp_path / "good.jsonl"
    good.write_text(rows)
    # multi-label rows with no label at all ("none of them") fit; all-empty data is one line
    some_empty = tmp_path / "some_empty.jsonl"
    some_empty.write_text(
        json.dumps({"text": "nice day", "label": []})
        + "\n"
        + json.dumps({"text": "refund me", "label": ["billing"]})
        + "\n"
    )
    assert labelq(redis_url, "fit", "multi", "--data", str(some_empty)).returncode == 0
    all_empty = tmp_path / "all_empty.jsonl"
    all_empty.write_text(json.dumps({"text": "nice day", "label": []}) + "\n")
    done = labelq(redis_url, "fit", "nothing", "--data", str(all_empty))
    assert done.returncode == 2 and "no row names a label" in done.stderr
    # bytes that are not UTF-8: the file and line; a BOM is fine
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(rows.encode() + b'{"text": "caf\xe9", "label": "thanks"}\n')
    done = labelq(redis_url, "fit", "latin", "--data", str(latin))
    assert done.returncode == 2 and "latin.jsonl:7: not UTF-8" in done.stderr
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + rows.encode())
    assert labelq(redis_url, "fit", "bom", "--data", str(bom)).returncode == 0
    # names: what a request can name, nothing that reaches another set's keys
    for name in ("", "a:version", "bad name/../x"):
        done = labelq(redis_url, "fit", name, "--data", str(good))
        assert done.returncode == 2 and "label set name" in done.stderr, name
    # one unusable set does not hide the others in `list`: named on stderr, skipped, exit 1 (a partial listing)
    import redis as redis_lib

    from worker.stream.labelsets import LABELSET_KEY, LABELSET_NAMES_KEY

    store = redis_lib.Redis.from_url(redis_url)
    store.set(LABELSET_KEY + "aaa-broken", b"\xff\xfe{")
    store.sadd(LABELSET_NAMES_KEY, "aaa-broken")
    listed = labelq(redis_url, "list")
    assert listed.returncode == 1 and "skipped aaa-broken: " in listed.stderr and "bom  v1" in listed.stdout
    assert "aaa-broken" not in listed.stdout
    # what `get` prints of a taught set can be `put` back (as a version without a head)
    shown = tmp_path / "shown.yaml"
    shown.write_text(labelq(redis_url, "get", "bom").stdout)
    done = labelq(redis_url, "put", "bom2", str(shown))
    assert done.returncode == 0 and "bom2 version 1: 2 labels" in done.stdout
    assert "head" not in labelq(redis_url, "get", "bom2").stdout


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "no labelled rows"),
        (json.dumps({"text": "a", "label": ["x", "y"]}) + "\n", "single-label data"),
    ],
)
def test_eval_refuses_what_it_cannot_measure(redis_url: str, tmp_path: Path, content: str, message: str) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text(content)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "labelq.cli",
            "eval",
            str(data),
            "--labels-file",
            str(ROOT / "tests/fixtures/nli_golden.json"),
        ],
        env={**os.environ, "LABELQ_REDIS_URL": redis_url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
