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
